"""User code that a deployer runs cannot reach the control plane's secrets: the attack of a
plain user's aggregator that reads the stack's admin token, the controller's environment, the
store and another job's task config, run through the real local deployer."""

from __future__ import annotations

import asyncio
import io
import json
import os
import sys
import time
import zipfile
from pathlib import Path

import pytest

from flame_controller.deployers.base import Launch
from flame_controller.deployers.local import LocalDeployer, LocalDeployerSettings
from flame_service.errors import FailedPrecondition
from flame_service.sandbox import SandboxUnavailable, choose_sandbox
from flame_spec import TaskConfig, parse_design, parse_job_spec
from flamelet.agent import Agent
from flamelet.api import RestClient
from flamelet.home import DatasetRegistry, Identity, LocalDataset
from tests.unit.flamelet.conftest import (
    CRED,
    NODE,
    FakeApiServer,
    FakeEvents,
    Running,
    eventually,
    settings_for,
)
from tests.unit.flamelet.conftest import fake_api as fake_api  # a fixture, re-exported

ATTACK = r"""
import json, sys
from pathlib import Path
cfg = json.loads(Path(sys.argv[1]).read_text())
found = {}
for name, path in cfg["job"]["hyperparameters"]["targets"].items():
    try:
        found[name] = "flm_user_the-admins-token" in Path(path).read_bytes().decode("latin1")
    except OSError:
        found[name] = None
print(json.dumps(found), flush=True)
"""
DESIGN = parse_design({"roles": [{"name": "trainer", "isDataConsumer": True}, {"name": "agg"}]})
SECRET = "flm_user_the-admins-token"


def _zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("agg/main.py", ATTACK)
    return buf.getvalue()


def _plant(tmp_path: Path) -> dict[str, str]:
    """The secrets a hostile task goes for, where a stack keeps them (mode 0600, same user)."""
    home = tmp_path / "home"
    data = tmp_path / "data"
    files = {
        "admin token": home / "secrets" / "admin.token",
        "store": data / "flame.db",
        "other job's config": data / "tasks" / "job-2" / "agg-0-x" / "config.json",
    }
    for path in files.values():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(SECRET)
        path.chmod(0o600)
    targets = {name: str(path) for name, path in files.items()}
    # the environment of the process that starts tasks (the controller's, in a stack)
    targets["controller environment"] = f"/proc/{os.getpid()}/environ"
    return targets


async def _run(tmp_path: Path, sandbox: str, *, warm: bool = False) -> dict[str, bool | None]:
    targets = _plant(tmp_path)
    deployer = LocalDeployer(
        tmp_path / "data",
        LocalDeployerSettings(
            python=sys.executable,
            launch_args=["code/agg/main.py"],
            sandbox=sandbox,
            warm_runners=1 if warm else 0,
        ),
    )
    if warm:  # the task runs in a process started before it (the SDK imported)
        deployer.fill_warm()
    spec = parse_job_spec({"datasets": {"d": ["d"]}, "hyperparameters": {"targets": targets}})
    config = TaskConfig(
        job_id="job-1", job_name="j", task_id="agg-0-a", role="agg", design=DESIGN, job=spec
    )
    launch = Launch("job-1", "agg-0-a", "agg", 1, config, _zip(), "flm_task_secret")
    handle = await deployer.start(launch)
    assert deployer.warm.handed == (1 if warm else 0)
    deadline = time.monotonic() + 120
    while (await deployer.observe(handle)).state == "running":
        assert time.monotonic() < deadline, "the task did not finish"
        await asyncio.sleep(0.05)
    out = await deployer.read_output(handle, final=True)
    await deployer.close()
    printed = [text for stream, text in out.lines if stream == "stdout"]
    assert printed, out.lines
    result: dict[str, bool | None] = json.loads(printed[-1])
    return result


@pytest.mark.parametrize("warm", [False, True], ids=["cold", "warm"])
async def test_a_sandboxed_task_reads_none_of_the_control_planes_secrets(
    tmp_path: Path, warm: bool
) -> None:
    found = await _run(tmp_path, "auto", warm=warm)
    assert found == {name: None for name in found}
    assert len(found) == 4


async def test_unsandboxed_the_same_task_reads_them_all(tmp_path: Path) -> None:
    """The attack is real: what the sandbox prevents (FLAME_SANDBOX=none, development only)."""
    found = await _run(tmp_path, "none")
    assert len(found) == 4 and None not in found.values()
    assert [name for name, value in found.items() if value] == [
        "admin token",
        "store",
        "other job's config",
    ]


def test_without_bubblewrap_tasks_are_refused_unless_asked_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no bwrap on it
    with pytest.raises(SandboxUnavailable, match="apt-get install bubblewrap"):
        choose_sandbox("auto")
    deployer = LocalDeployer(tmp_path, LocalDeployerSettings(sandbox="auto"))
    with pytest.raises(FailedPrecondition, match="FLAME_SANDBOX=none"):
        deployer.sandbox()
    assert choose_sandbox("none").kind == "none"


NODE_ATTACK = r"""
import json, os, sys
cfg = json.load(open("config.json"))
data = cfg["dataset"]["uri"]
out = {"dataset": open(os.path.join(data, "shard.txt")).read()}
targets = {
    "identity": "TARGET_IDENTITY",
    "other task": "TARGET_OTHER",
    "other dataset": "TARGET_DATASET",
}
for name, path in ((n, os.environ[v]) for n, v in targets.items()):
    try:
        open(path).read()
        out[name] = "read"
    except OSError:
        out[name] = None
try:
    open(os.path.join(data, "planted.txt"), "w").write("x")
    out["write dataset"] = "written"
except OSError:
    out["write dataset"] = None
print(json.dumps(out), flush=True)
"""


@pytest.mark.parametrize("warm", [0, 2], ids=["cold", "warm"])
async def test_a_nodes_task_sees_its_dataset_read_only_and_not_the_nodes_identity(
    tmp_path: Path, fake_api: FakeApiServer, monkeypatch: pytest.MonkeyPatch, warm: int
) -> None:
    """Also when the task runs in a warm runner (started before the task, flamelet.warm):
    it sees its own dataset, not the node's other one, for which a runner waits too."""
    home, data, other_data = tmp_path / "home", tmp_path / "data", tmp_path / "other-data"
    for folder in (data, other_data):
        folder.mkdir()
        (folder / "shard.txt").write_text("rows")
    DatasetRegistry(home).add(LocalDataset(name="digits", path=str(data), id="ds-1"))
    DatasetRegistry(home).add(LocalDataset(name="faces", path=str(other_data), id="ds-2"))
    identity = home / "identity.json"
    identity.write_text("{}")
    other = home / "tasks" / "other-0" / "config.json"
    other.parent.mkdir(parents=True)
    other.write_text("{}")
    monkeypatch.setenv("FLAME_TARGET_IDENTITY", str(identity))
    monkeypatch.setenv("FLAME_TARGET_OTHER", str(other))
    monkeypatch.setenv("FLAME_TARGET_DATASET", str(other_data / "shard.txt"))
    settings = settings_for(home, sandbox="auto", warm_runners=warm)
    api = RestClient(fake_api.url, CRED)
    ident = Identity(server=fake_api.url, node_id=NODE, credential=CRED, notifier="unused")
    agent = Agent(ident, api, FakeEvents(), settings)
    async with Running(agent, api):
        if warm:
            await eventually(lambda: len(agent.warm.idle()) == 2, timeout=120, what="runners")
        fake_api.add_task(
            "t1", {"trainer/main.py": NODE_ATTACK.replace("TARGET_", "FLAME_TARGET_")}
        )
        await eventually(lambda: fake_api.log_lines("t1", "stdout"), timeout=120, what="output")
    seen = json.loads(fake_api.log_lines("t1", "stdout")[-1])
    assert seen == {
        "dataset": "rows",
        "identity": None,
        "other task": None,
        "other dataset": None,
        "write dataset": None,
    }
    assert not (data / "planted.txt").exists()
    assert agent.warm.handed == (1 if warm else 0)
