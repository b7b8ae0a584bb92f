"""Warm runners outlive nothing: a runner whose agent is SIGKILLed runs no task and says so.
They wait at idle CPU priority, and their task runs at normal priority."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from flame_service.sandbox import Sandbox
from flamelet import priority
from flamelet.runner import Limits, read_exit_code
from flamelet.warm import WarmPool

AGENT = """
import asyncio, json, sys
from pathlib import Path
from flame_service.sandbox import Sandbox
from flamelet import runner
from flamelet.warm import WarmPool

async def main() -> None:
    pool = WarmPool(Path(sys.argv[1]), sys.executable, runner.Limits(), size=1)
    await pool.fill(None, Sandbox("none"))
    ready = pool.idle()[0]
    seen = {"pid": ready.started.pid, "workdir": str(ready.workdir)}
    print("READY", json.dumps(seen), flush=True)
    await asyncio.sleep(600)

asyncio.run(main())
"""


def test_a_runner_whose_agent_is_killed_exits_without_running_anything(tmp_path: Path) -> None:
    agent = subprocess.Popen(
        [sys.executable, "-c", AGENT, str(tmp_path / "tasks")], stdout=subprocess.PIPE, text=True
    )
    try:
        assert agent.stdout is not None
        line = next(line for line in agent.stdout if line.startswith("READY "))
        ready = json.loads(line.removeprefix("READY "))
    finally:
        agent.send_signal(signal.SIGKILL)
        agent.wait(60)
    workdir = Path(ready["workdir"])
    deadline = time.monotonic() + 120  # the runner may still be importing the SDK
    while read_exit_code(workdir) is None:
        assert time.monotonic() < deadline, "the runner did not notice its agent was gone"
        time.sleep(0.05)
    assert read_exit_code(workdir) == 75
    assert "flame.launch: the node agent went away" in (workdir / "stderr.log").read_text()
    deadline = time.monotonic() + 60
    while psutil.pid_exists(ready["pid"]):  # its supervisor, reaped by init
        if psutil.Process(ready["pid"]).status() == psutil.STATUS_ZOMBIE:
            break
        assert time.monotonic() < deadline, "the runner's supervisor is still there"
        time.sleep(0.05)


TELL_POLICY = "import os; print('policy', os.sched_getscheduler(0), flush=True)"


def _policies(pid: int) -> set[int]:
    procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    return {
        os.sched_getscheduler(int(t.name))
        for p in procs
        for t in Path(f"/proc/{p.pid}/task").iterdir()
    }


@pytest.mark.skipif(not priority.can_leave_idle(), reason="needs CAP_SYS_NICE (root)")
async def test_a_runner_waits_at_idle_priority_and_its_task_runs_at_normal_priority(
    tmp_path: Path,
) -> None:
    pool = WarmPool(tmp_path / "tasks", sys.executable, Limits(), size=1, idle_priority=True)
    await pool.fill(None, Sandbox("none"))
    ready = pool.idle()[0]
    deadline = time.monotonic() + 60
    while not psutil.Process(ready.started.pid).children():  # the supervisor starts it
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    assert _policies(ready.started.pid) == {os.SCHED_IDLE}
    taken = await pool.take(None)
    assert taken is ready
    (ready.workdir / "tell.py").write_text(TELL_POLICY)
    await pool.hand_over(ready, [str(ready.workdir / "tell.py")], {})
    await asyncio.wait_for(ready.started.process.wait(), 120)
    assert f"policy {os.SCHED_OTHER}" in (ready.workdir / "stdout.log").read_text()


def test_an_unprivileged_agent_starts_its_runners_at_normal_priority() -> None:
    """It could not raise them again, and a task must never run at idle priority."""
    if os.geteuid() != 0:
        assert not priority.can_leave_idle()
        return
    child = os.fork()
    if child == 0:  # as nobody: exit 0 if it would start runners at idle priority
        try:
            os.setgid(65534)
            os.setuid(65534)
            os._exit(0 if priority.can_leave_idle() else 3)
        finally:
            os._exit(2)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 3
