"""Warm runners outlive nothing: a runner whose agent is SIGKILLed runs no task and says so."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from flamelet.runner import read_exit_code

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
