"""Pieces of flamectl that need no server: config file, code zips, output, labels."""

from __future__ import annotations

import io
import json
import os
import zipfile

import pytest
import yaml

from flame.cli.code import load_code, zip_folder
from flame.cli.common import parse_labels
from flame.cli.config import Login, config_path, load_login, save_login
from flame.cli.output import Format, render
from flame.cli.resources import Design, Node
from flame.errors import ConfigError


def test_config_path_follows_flame_config_then_xdg(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("FLAME_CONFIG", str(tmp_path / "explicit.yaml"))
    assert config_path() == tmp_path / "explicit.yaml"
    monkeypatch.delenv("FLAME_CONFIG")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert config_path() == tmp_path / "xdg" / "flame" / "config.yaml"
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert config_path() == tmp_path / "home" / ".config" / "flame" / "config.yaml"


def test_saved_login_is_0600_even_when_overwriting_a_loose_file(tmp_path) -> None:
    path = tmp_path / "cfg" / "config.yaml"
    path.parent.mkdir()
    path.write_text("server: old\ntoken: old\n")
    os.chmod(path, 0o644)
    save_login(Login(server="http://s", token="secret"), path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_login(path) == Login(server="http://s", token="secret")


def test_a_broken_config_file_is_a_config_error(tmp_path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("server: [unclosed\n")
    with pytest.raises(ConfigError, match="not a valid flamectl config"):
        load_login(path)


def test_zip_folder_is_deterministic_and_skips_caches_and_symlinks(tmp_path) -> None:
    root = tmp_path / "code"
    (root / "trainer" / "__pycache__").mkdir(parents=True)
    (root / "trainer" / "main.py").write_text("print(1)\n")
    (root / "trainer" / "__pycache__" / "main.cpython-311.pyc").write_bytes(b"x")
    (root / "trainer" / "stale.pyc").write_bytes(b"x")
    (root / ".git").mkdir()
    (root / ".git" / "HEAD").write_text("ref")
    (root / "secret").symlink_to("/etc/passwd")
    first = zip_folder(root)
    os.utime(root / "trainer" / "main.py", (1, 1))
    assert zip_folder(root) == first  # same bytes, same sha256, whatever the mtimes
    names = zipfile.ZipFile(io.BytesIO(first)).namelist()
    assert names == ["trainer/main.py"]


def test_load_code_takes_a_zip_as_is_and_rejects_other_files(tmp_path) -> None:
    archive = tmp_path / "code.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("aggregator/main.py", "")
    assert load_code(archive) == archive.read_bytes()
    other = tmp_path / "code.tar"
    other.write_bytes(b"not a zip")
    with pytest.raises(ConfigError, match="neither a folder nor a zip"):
        load_code(other)


def test_labels_parse_key_value_pairs() -> None:
    assert parse_labels(["site=a", "gpu=", "k=v=w"]) == {"site": "a", "gpu": "", "k": "v=w"}
    with pytest.raises(ConfigError):
        parse_labels(["novalue"])


def test_render_formats(capsys) -> None:
    design = Design.model_validate(
        {"id": "d-1", "name": "central", "schema": {"roles": [{"name": "trainer"}]}, "version": 2}
    )
    render(design, Format.json)
    assert json.loads(capsys.readouterr().out)["schema"]["roles"][0]["name"] == "trainer"
    render([design], Format.yaml)
    assert yaml.safe_load(capsys.readouterr().out)[0]["version"] == 2
    nodes = [Node(id="n-1", name="silo", labels={"site": "a"}, enrolled=True)]
    render(nodes, Format.table, ("id", "name", "labels", "enrolled", "last_seen"))
    out = capsys.readouterr().out
    assert "ID" in out and "silo" in out and "site=a" in out and "yes" in out


def test_client_lists_follow_every_page_and_pass_the_token() -> None:
    import httpx

    from flame.cli.client import FlameClient

    seen: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        token = request.url.params.get("page_token", "")
        seen.append(token)
        start = int(token or 0)
        items = [{"id": f"d-{i}", "name": f"n{i}"} for i in range(start, min(start + 2, 5))]
        more = str(start + 2) if start + 2 < 5 else ""
        return httpx.Response(200, json={"items": items, "next_page_token": more})

    with FlameClient("http://x", "t", transport=httpx.MockTransport(handle)) as client:
        designs = client.list_designs()
    assert [d.id for d in designs] == [f"d-{i}" for i in range(5)]
    assert seen == ["", "2", "4"]
