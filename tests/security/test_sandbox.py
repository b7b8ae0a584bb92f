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


async def _run(tmp_path: Path, sandbox: str) -> dict[str, bool | None]:
    targets = _plant(tmp_path)
    deployer = LocalDeployer(
        tmp_path / "data",
        LocalDeployerSettings(
            python=sys.executable, launch_args=["code/agg/main.py"], sandbox=sandbox
        ),
    )
    spec = parse_job_spec({"datasets": {"d": ["d"]}, "hyperparameters": {"targets": targets}})
    config = TaskConfig(
        job_id="job-1", job_name="j", task_id="agg-0-a", role="agg", design=DESIGN, job=spec
    )
    launch = Launch("job-1", "agg-0-a", "agg", 1, config, _zip(), "flm_task_secret")
    handle = await deployer.start(launch)
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


async def test_a_sandboxed_task_reads_none_of_the_control_planes_secrets(tmp_path: Path) -> None:
    found = await _run(tmp_path, "auto")
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
