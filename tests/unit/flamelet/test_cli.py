"""``flamelet login`` and ``flamelet dataset add/list`` against the in-test apiserver."""

from __future__ import annotations

import json
import stat
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import structlog
from click.testing import Result
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
        "ca_pem": None,
    }


def test_login_takes_the_enrolment_token_from_stdin(
    tmp_path: Path, fake_api: FakeApiServer
) -> None:
    home = tmp_path / "home"
    res = runner.invoke(
        app,
        ["login", "--server", fake_api.url, "--token-file", "-", "--home", str(home)],
        input="enrol-1\n",
    )
    assert res.exit_code == 0, res.output
    assert json.loads((home / "identity.json").read_text())["credential"] == CRED


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
            "num_samples": 0,
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


def _login(home: Path, fake_api: FakeApiServer) -> None:
    res = runner.invoke(
        app, ["login", "--server", fake_api.url, "--token", "enrol-1", "--home", str(home)]
    )
    assert res.exit_code == 0, res.output


def _add(home: Path, name: str, path: Path, *extra: str) -> Result:
    return runner.invoke(app, ["dataset", "add", name, str(path), "--home", str(home), *extra])


def test_dataset_add_counts_the_training_samples_it_registers(
    tmp_path: Path, fake_api: FakeApiServer
) -> None:
    home = tmp_path / "home"
    _login(home, fake_api)
    npz = tmp_path / "shard.npz"
    np.savez(npz, x_train=np.zeros((37, 4)), y_train=np.zeros(37), x_test=np.zeros((5, 4)))
    csv = tmp_path / "rows.csv"
    csv.write_text("a,b,label\n1,2,0\n3,4,1\n\n5,6,1\n")
    assert _add(home, "npz", npz).exit_code == 0
    assert _add(home, "csv", csv).exit_code == 0
    told = _add(home, "told", tmp_path / "shard.npz", "--samples", "12")
    assert told.exit_code == 0 and "12 samples" in told.output
    assert [(d["name"], d["num_samples"]) for d in fake_api.datasets] == [
        ("npz", 37),
        ("csv", 3),
        ("told", 12),
    ]


@pytest.mark.parametrize(
    "content",
    [
        b"not a zip",
        b"",  # an empty zip below
        # an array header that is not a literal: never evaluated
        b"\x93NUMPY\x01\x00\x30\x00{'shape': __import__('os').getpid()}      \n",
    ],
    ids=["not-a-zip", "no-training-array", "code-in-header"],
)
def test_a_dataset_whose_samples_cannot_be_read_is_not_registered(
    tmp_path: Path, fake_api: FakeApiServer, content: bytes
) -> None:
    home = tmp_path / "home"
    _login(home, fake_api)
    path = tmp_path / "bad.npz"
    if content.startswith(b"\x93NUMPY"):
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("x_train.npy", content)
    elif content:
        path.write_bytes(content)
    else:
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("weights.npy", b"")
    res = _add(home, "bad", path)
    assert res.exit_code == 1 and "bad.npz" in res.output
    assert fake_api.datasets == []


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
        {
            "name": "digits-0",
            "realm": "",
            "format": "digits",
            "size_bytes": 0,
            "num_samples": 0,
            "description": "",
        }
    ]
    assert "digits://" not in json.dumps(fake_api.datasets)  # the address stays on the node
    saved = json.loads((home / "datasets.json").read_text())["digits-0"]
    assert saved["path"] == "digits://iid/3/0"

    # a file:// URI is a local path: it must exist, and its size is sent
    shard = tmp_path / "shard.npz"
    shard.write_bytes(b"z" * 10)
    ok = runner.invoke(
        app, ["dataset", "add", "s", f"file://{shard}", "--samples", "3", "--home", str(home)]
    )
    assert ok.exit_code == 0, ok.output
    assert fake_api.datasets[-1]["size_bytes"] == 10
    gone = runner.invoke(app, ["dataset", "add", "t", f"file://{tmp_path}/no", "--home", str(home)])
    assert gone.exit_code == 1 and len(fake_api.datasets) == 2


def test_login_keeps_the_ca_it_was_given_and_refuses_a_file_without_one(
    tmp_path: Path, fake_api: FakeApiServer
) -> None:
    from flame_spec.pki import Authority

    home = tmp_path / "home"
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    argv = ["login", "--server", fake_api.url, "--token-file", "-", "--home", str(home)]
    bad = runner.invoke(app, [*argv, "--ca-file", str(junk)], input="enrol-1\n")
    assert bad.exit_code == 1 and "no PEM certificate" in bad.output
    assert not (home / "identity.json").exists()
    ca = tmp_path / "ca.pem"
    ca.write_bytes(Authority.create("test CA").cert_pem)
    ok = runner.invoke(app, [*argv, "--ca-file", str(ca)], input="enrol-1\n")
    assert ok.exit_code == 0, ok.output
    assert json.loads((home / "identity.json").read_text())["ca_pem"] == ca.read_text()
