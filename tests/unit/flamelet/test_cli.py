"""``flamelet login`` and ``flamelet dataset add/list`` against the in-test apiserver."""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from typer.testing import CliRunner

from flamelet.cli import app

from .conftest import CRED, NODE, FakeApiServer

runner = CliRunner()


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    yield
    structlog.reset_defaults()  # a command may have bound logging to the runner's stderr


def test_login_keeps_identity_private(tmp_path: Path, fake_api: FakeApiServer) -> None:
    home = tmp_path / "home"
    bad = runner.invoke(
        app, ["login", "--server", fake_api.url, "--token", "wrong", "--home", str(home)]
    )
    assert bad.exit_code == 1 and "enrolment failed" in bad.output
    assert not (home / "identity.json").exists()

    ok = runner.invoke(
        app, ["login", "--server", fake_api.url + "/", "--token", "enrol-1", "--home", str(home)]
    )
    assert ok.exit_code == 0, ok.output
    ident = home / "identity.json"
    assert stat.S_IMODE(ident.stat().st_mode) == 0o600
    assert json.loads(ident.read_text()) == {
        "server": fake_api.url,
        "node_id": NODE,
        "credential": CRED,
        "notifier": "127.0.0.1:1",
    }


def test_dataset_add_sends_size_not_path(tmp_path: Path, fake_api: FakeApiServer) -> None:
    home = tmp_path / "home"
    assert (
        runner.invoke(
            app, ["login", "--server", fake_api.url, "--token", "enrol-1", "--home", str(home)]
        ).exit_code
        == 0
    )
    data = tmp_path / "shard-0"
    data.mkdir()
    (data / "train.npz").write_bytes(b"x" * 1000)
    (data / "sub").mkdir()
    (data / "sub" / "test.npz").write_bytes(b"y" * 234)
    res = runner.invoke(
        app,
        [
            "dataset",
            "add",
            "digits-0",
            str(data),
            "--realm",
            "eu/a",
            "--format",
            "npz",
            "--home",
            str(home),
        ],
    )
    assert res.exit_code == 0, res.output
    assert fake_api.datasets == [
        {
            "name": "digits-0",
            "realm": "eu/a",
            "format": "npz",
            "size_bytes": 1234,
            "description": "",
        }
    ]
    assert str(data) not in json.dumps(fake_api.datasets)
    listed = runner.invoke(app, ["dataset", "list", "--home", str(home)])
    assert "digits-0" in listed.output and str(data.resolve()) in listed.output
    assert "ds-1" in listed.output

    missing = runner.invoke(
        app, ["dataset", "add", "x", str(tmp_path / "nope"), "--home", str(home)]
    )
    assert missing.exit_code == 1 and len(fake_api.datasets) == 1


def test_run_without_login_fails_clearly(tmp_path: Path) -> None:
    res = runner.invoke(app, ["run", "--home", str(tmp_path / "empty")])
    assert res.exit_code == 1 and "flamelet login" in res.output


def test_dataset_add_takes_a_uri_the_task_reads_and_keeps_it_on_the_node(
    tmp_path: Path, fake_api: FakeApiServer
) -> None:
    home = tmp_path / "home"
    login = ["login", "--server", fake_api.url, "--token", "enrol-1", "--home", str(home)]
    assert runner.invoke(app, login).exit_code == 0
    res = runner.invoke(
        app, ["dataset", "add", "digits-0", "digits://iid/3/0", "--home", str(home)]
    )
    assert res.exit_code == 0, res.output
    assert fake_api.datasets == [
        {"name": "digits-0", "realm": "", "format": "digits", "size_bytes": 0, "description": ""}
    ]
    assert "digits://" not in json.dumps(fake_api.datasets)  # the address stays on the node
    saved = json.loads((home / "datasets.json").read_text())["digits-0"]
    assert saved["path"] == "digits://iid/3/0"

    # a file:// URI is a local path: it must exist, and its size is sent
    shard = tmp_path / "shard.npz"
    shard.write_bytes(b"z" * 10)
    ok = runner.invoke(app, ["dataset", "add", "s", f"file://{shard}", "--home", str(home)])
    assert ok.exit_code == 0, ok.output
    assert fake_api.datasets[-1]["size_bytes"] == 10
    gone = runner.invoke(app, ["dataset", "add", "t", f"file://{tmp_path}/no", "--home", str(home)])
    assert gone.exit_code == 1 and len(fake_api.datasets) == 2
