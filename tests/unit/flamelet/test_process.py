"""``flamelet run`` as a real process: runs a task, stops cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from .conftest import Node, eventually
from .test_agent import TRACE


async def test_flamelet_run_process(node: Node, tmp_path: Path) -> None:
    node.identity().model_copy(update={"notifier": "127.0.0.1:1"}).save(node.home)
    node.fake.add_task("t1", {"trainer/main.py": TRACE})
    env = {
        **os.environ,
        "FLAME_FLAMELET_COMMAND": json.dumps(["{python}", "code/{role}/main.py"]),
        "FLAME_FLAMELET_RESYNC_INTERVAL": "0.2",
        "FLAME_FLAMELET_POLL_INTERVAL": "0.05",
        "FLAME_FLAMELET_BACKOFF_MAX": "0.5",
        "FLAME_SANDBOX": "none",  # TRACE reports into the dataset folder (read-only when sandboxed)
    }
    err = (tmp_path / "flamelet.err").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "flamelet.cli", "run", "--home", str(node.home)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=err,
    )
    try:
        await eventually(lambda: "completed" in node.fake.states("t1"), what="task completed")
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        err.close()
    events = [json.loads(line) for line in (tmp_path / "flamelet.err").read_text().splitlines()]
    names = [e["event"] for e in events]
    assert "task.started" in names and "status.reported" in names
    assert names[-1] == "agent.stopped"
    assert all(e.get("node_id") == "node-1" for e in events if e["event"] == "task.started")
