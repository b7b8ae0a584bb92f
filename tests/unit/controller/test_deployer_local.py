"""The local deployer runs real child processes, survives a controller restart, stops groups."""

from __future__ import annotations

import asyncio
import io
import json
import os
import stat
import sys
import time
import zipfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

from flame_controller.deployers.base import Deployer, Deployment
from flame_controller.deployers.local import LocalDeployer, LocalDeployerSettings
from flame_controller.store.records import TaskRecord
from flame_service.errors import InvalidArgument

# The "role": reads its config, records its start, then behaves as job.hyperparameters say.
ROLE = r"""
import json, os, subprocess, sys, time
from pathlib import Path
cfg = json.loads(Path(sys.argv[1]).read_text())
Path("env.json").write_text(json.dumps({"env": dict(os.environ), "cwd": os.getcwd(),
                                        "argv": sys.argv}))
with open("starts.log", "a") as f:
    f.write(f"{os.getpid()}\n")
mode = cfg["job"]["hyperparameters"]["mode"]
if mode == "exit":
    sys.exit(cfg["job"]["hyperparameters"]["code"])
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
Path("grandchild.tmp").write_text(str(child.pid))
Path("grandchild.tmp").rename("grandchild.pid")
while not Path("release").exists():
    time.sleep(0.02)
"""


def code_zip(extra: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("aggregator/main.py", ROLE)
        for name, text in (extra or {}).items():
            zf.writestr(name, text)
    return buf.getvalue()


def make_task(tid: str = "aggregator-0-abc", info: dict[str, Any] | None = None) -> TaskRecord:
    return TaskRecord(id=tid, job_id="job-1", role="aggregator", index=0, info=info or {})


def config(mode: str = "wait", code: int = 0) -> dict[str, Any]:
    return {
        "job_id": "job-1",
        "task_id": "aggregator-0-abc",
        "role": "aggregator",
        "job": {"hyperparameters": {"mode": mode, "code": code}},
        "discovery": {"kind": "control-plane", "url": "http://cp"},
    }


def deployer(tmp_path: Path, grace: float = 5.0) -> LocalDeployer:
    settings = LocalDeployerSettings(
        python=sys.executable,
        launch_args=["code/aggregator/main.py"],
        stop_grace_seconds=grace,
        env={"FLAME_MQTT_HOST": "127.0.0.1", "SECRET_THING": "x"},
    )
    return LocalDeployer(tmp_path, settings)


async def wait_for(pred: Callable[[], Awaitable[bool] | bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        got = pred()
        if not isinstance(got, bool):
            got = await got
        if got:
            return
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the deadline")
        await asyncio.sleep(0.02)


def recorded(task: TaskRecord, dep: Deployment) -> TaskRecord:
    """What the reconciler stores after a start."""
    return task.model_copy(update={"pid": dep.pid, "info": {"deployer": dep.info}})


async def test_runs_the_role_with_clean_env_and_config(tmp_path: Path) -> None:
    d = deployer(tmp_path)
    assert isinstance(d, Deployer)
    task = make_task()
    dep = await d.start(task, config(), code_zip(), "flm_task_secret")
    task = recorded(task, dep)
    workdir = d.workdir(task)
    await wait_for(lambda: (workdir / "grandchild.pid").exists())
    seen = json.loads((workdir / "env.json").read_text())
    env = seen["env"]
    assert seen["cwd"] == str(workdir)
    assert env["HOME"] == str(workdir)
    assert env["FLAME_TASK_CONFIG"] == str(workdir / "config.json")
    assert env["FLAME_TASK_ID"] == task.id and env["FLAME_MQTT_HOST"] == "127.0.0.1"
    assert "SECRET_THING" not in env
    assert not {k for k in os.environ if k.startswith("PYTEST")} & set(env)
    cfg = json.loads((workdir / "config.json").read_text())
    assert cfg["discovery"] == {
        "kind": "control-plane",
        "url": "http://cp",
        "token": "flm_task_secret",
    }
    assert cfg["workdir"] == str(workdir)
    assert cfg["checkpoint_dir"] == str(workdir / "checkpoints")
    assert stat.S_IMODE((workdir / "config.json").stat().st_mode) == 0o600
    # one process shows the task command line: the wrapper script does not repeat it
    assert psutil.Process(dep.pid).cmdline() == ["/bin/sh", "run.sh"]
    assert seen["argv"] == ["code/aggregator/main.py", "config.json"]
    # its own session: a controller crash does not take it down
    assert os.getsid(dep.pid) == dep.pid != os.getsid(0)
    assert await d.is_running(task)
    (workdir / "release").touch()
    await wait_for(lambda: _exited(d, task))
    obs = await d.observe(task)
    assert (obs.state, obs.exit_code) == ("exited", 0)
    await d.stop(task)  # stopping an ended task is fine


async def _exited(d: LocalDeployer, task: TaskRecord) -> bool:
    return (await d.observe(task)).state == "exited"


async def test_exit_codes_are_reported(tmp_path: Path) -> None:
    d = deployer(tmp_path)
    task = make_task()
    task = recorded(task, await d.start(task, config("exit", 3), code_zip(), "t"))
    await wait_for(lambda: _exited(d, task))
    obs = await d.observe(task)
    assert (obs.state, obs.exit_code, obs.detail) == ("exited", 3, "exit code 3")
    # a new deployer instance (controller restarted) reads the recorded exit status
    obs2 = await deployer(tmp_path).observe(task)
    assert (obs2.state, obs2.exit_code) == ("exited", 3)


async def test_stop_kills_the_whole_process_group(tmp_path: Path) -> None:
    d = deployer(tmp_path, grace=2.0)
    task = make_task()
    task = recorded(task, await d.start(task, config(), code_zip(), "t"))
    workdir = d.workdir(task)
    await wait_for(lambda: (workdir / "grandchild.pid").exists())
    grandchild = int((workdir / "grandchild.pid").read_text())
    pids = [task.pid, grandchild]
    assert all(psutil.pid_exists(p) for p in pids if p)
    await d.stop(task)
    for pid in pids:
        assert pid is not None
        assert not _alive(pid)
    obs = await d.observe(task)
    assert obs.state in ("exited", "missing")
    assert not await d.is_running(task)


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


async def test_restarted_controller_adopts_instead_of_starting_twice(tmp_path: Path) -> None:
    first = deployer(tmp_path)
    task = make_task()
    dep = await first.start(task, config(), code_zip(), "t")
    workdir = first.workdir(task)
    await wait_for(lambda: (workdir / "grandchild.pid").exists())  # started, past starts.log
    await first.close()  # the controller goes away; the task keeps running

    second = deployer(tmp_path)
    stored = recorded(task, dep)
    assert await second.adopt(stored)
    # crash window: the pid never reached the store; start() must find the running process
    again = await second.start(task, config(), code_zip(), "t")
    assert again.pid == dep.pid
    assert len((workdir / "starts.log").read_text().split()) == 1  # the role started once
    await second.stop(stored)
    assert not _alive(dep.pid or 0)


async def test_reused_pid_is_not_taken_for_the_task(tmp_path: Path) -> None:
    d = deployer(tmp_path)
    # a record pointing at an unrelated live process (our own pid) with another create time
    me = psutil.Process()
    stale = make_task(info={"deployer": {"pid": me.pid, "create_time": me.create_time() - 100}})
    obs = await d.observe(stale)
    assert obs.state == "missing"
    await d.stop(stale)  # must not signal the unrelated process
    assert me.is_running()


async def test_restart_after_exit_runs_again_and_keeps_checkpoints(tmp_path: Path) -> None:
    d = deployer(tmp_path)
    task = make_task()
    first = recorded(task, await d.start(task, config("exit", 1), code_zip(), "t"))
    await wait_for(lambda: _exited(d, first))
    (d.workdir(task) / "checkpoints" / "round-3.json").write_text("{}")
    second = recorded(task, await d.start(first, config("exit", 0), code_zip(), "t"))
    assert second.pid != first.pid
    await wait_for(lambda: _exited(d, second))
    assert (await d.observe(second)).exit_code == 0
    assert (d.workdir(task) / "checkpoints" / "round-3.json").exists()
    assert len((d.workdir(task) / "starts.log").read_text().split()) == 2


async def test_unsafe_code_zip_is_refused_and_nothing_runs(tmp_path: Path) -> None:
    d = deployer(tmp_path)
    task = make_task()
    with pytest.raises(InvalidArgument, match=r"\.\."):
        await d.start(task, config(), code_zip({"../evil.py": "x"}), "t")
    workdir = d.workdir(task)
    assert not (workdir / "code").exists()
    assert not (workdir / "process.json").exists()
    assert not (tmp_path / "tasks" / "job-1" / "evil.py").exists()
    assert (await d.observe(task)).state == "missing"


async def test_output_is_read_once_in_complete_lines(tmp_path: Path) -> None:
    d = deployer(tmp_path)
    task = make_task()
    task = recorded(task, await d.start(task, config("exit", 0), code_zip(), "t"))
    await wait_for(lambda: _exited(d, task))
    workdir = d.workdir(task)
    (workdir / "stdout.log").write_bytes(b"one\ntwo\npart")
    (workdir / "stderr.log").write_bytes(b"caf\xc3\xa9 \xff\n")  # one invalid byte
    out = await d.read_output(task)
    assert out.lines == [("stdout", "one"), ("stdout", "two"), ("stderr", "café \ufffd")]
    assert await d.read_output(task) == out  # nothing acknowledged yet: same again
    await d.ack_output(task, out)
    assert (await d.read_output(task)).lines == []  # "part" has no newline yet
    final = await d.read_output(task, final=True)
    assert final.lines == [("stdout", "part")]
    await d.ack_output(task, final)
    # a restarted controller does not resend what was shipped
    with (workdir / "stdout.log").open("ab") as f:
        f.write(b"\nthree\n")
    again = await deployer(tmp_path).read_output(task)
    assert again.lines == [("stdout", ""), ("stdout", "three")]
