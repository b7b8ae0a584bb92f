"""flamectl as a subprocess against the real controller + apiserver (uvicorn) on loopback."""

from __future__ import annotations

import hashlib
import json
import stat
from pathlib import Path

import yaml

from flame.cli.code import zip_folder

FIXTURES = Path(__file__).parents[1] / "fixtures" / "designs"


def _design_file(tmp_path: Path) -> Path:
    schema = json.loads((FIXTURES / "central.json").read_text())["design"]
    path = tmp_path / "design.json"
    path.write_text(json.dumps(schema))
    return path


def _code_dir(tmp_path: Path) -> Path:
    root = tmp_path / "code"
    for role in ("trainer", "aggregator"):
        (root / role).mkdir(parents=True)
        base = role.capitalize()  # Trainer, Aggregator: `code push` checks the entry class
        (root / role / "main.py").write_text(f"from flame import {base}\nclass My({base}): ...\n")
        (root / role / "__pycache__").mkdir()
        (root / role / "__pycache__" / "main.cpython-311.pyc").write_bytes(b"junk")
    return root


def test_flamectl_drives_the_whole_resource_life_cycle(stack, flamectl, tmp_path) -> None:
    out = flamectl("login", "--server", stack.api_url, "--token", stack.admin_token)
    assert "admin" in out.stdout
    assert stat.S_IMODE(flamectl.config.stat().st_mode) == 0o600
    assert yaml.safe_load(flamectl.config.read_text())["server"] == stack.api_url

    node = json.loads(flamectl("node", "create", "silo-e2e", "-l", "site=a", "-o", "json").stdout)
    assert node["node"]["labels"] == {"site": "a"} and node["enrolment_token"]
    node_id = node["node"]["id"]

    dataset = json.loads(
        flamectl(
            "dataset", "create", "digits-e2e", "--node", node_id, "--format", "npz",
            "--size", "1024", "--realm", "eu/a", "-o", "json",
        ).stdout
    )  # fmt: skip
    assert (dataset["node_id"], dataset["size_bytes"], dataset["realm"]) == (node_id, 1024, "eu/a")

    design = json.loads(
        flamectl(
            "design", "create", "central-e2e", "--schema", str(_design_file(tmp_path)), "-o", "json"
        ).stdout
    )
    assert [r["name"] for r in design["schema"]["roles"]] == ["trainer", "aggregator"]

    code_dir = _code_dir(tmp_path)
    pushed = json.loads(flamectl("code", "push", "central-e2e", str(code_dir), "-o", "json").stdout)
    assert pushed["version"] == 1
    assert pushed["sha256"] == hashlib.sha256(zip_folder(code_dir)).hexdigest()
    assert sorted(pushed["roles"]) == ["aggregator", "trainer"]
    pulled = tmp_path / "pulled.zip"
    flamectl("code", "pull", "central-e2e", "1", "--out", str(pulled))
    assert hashlib.sha256(pulled.read_bytes()).hexdigest() == pushed["sha256"]

    spec = tmp_path / "job.json"
    spec.write_text(json.dumps({"rounds": 3, "datasets": {"default": [dataset["id"]]}}))
    job = json.loads(
        flamectl(
            "job", "create", "digits-e2e", "--design", "central-e2e", "--spec", str(spec),
            "-o", "json",
        ).stdout
    )  # fmt: skip
    assert (
        job["state"] == "ready" and job["spec"]["rounds"] == 3 and job["code_version"] == 1
    )  # latest

    table = flamectl("job", "list").stdout
    assert "digits-e2e" in table and "ready" in table and job["id"] in table
    got = yaml.safe_load(flamectl("job", "get", "digits-e2e", "-o", "yaml").stdout)
    assert got["id"] == job["id"] and got["design_id"] == design["id"]
    status = flamectl("job", "status", job["id"]).stdout
    assert "transitions" in status and "trainer" in status and "aggregator" in status

    flamectl("job", "delete", job["id"])
    missing = flamectl("job", "get", job["id"], check=False)
    assert missing.code == 3  # not found, as `flamectl --help` documents
    assert "not found" in missing.stderr.lower() and "404" in missing.stderr


def test_flamectl_shows_the_servers_problem_detail_and_fails(stack, flamectl, tmp_path) -> None:
    flamectl("login", "--server", stack.api_url, "--token", stack.admin_token)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"roles": [], "channels": []}))
    result = flamectl("design", "create", "empty-e2e", "--schema", str(bad), check=False)
    assert result.code == 1
    assert "error: invalid design" in result.stderr and "HTTP 400" in result.stderr
    assert "empty-e2e" not in flamectl("design", "list").stdout  # nothing stored

    wrong = flamectl("login", "--server", stack.api_url, "--token", "flm_user_wrong", check=False)
    assert wrong.code == 4 and "401" in wrong.stderr  # refused token
