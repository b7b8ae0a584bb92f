"""Local runs fork each task from one interpreter that imported the SDK: every task is still a
process of its own, with its own output, exit status and random state, and can be killed."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

from flame.forkserver import ForkServer

TASK = """
import json, os, sys
import numpy as np
print("out", os.getpid(), flush=True)
print("err", file=sys.stderr, flush=True)
json.dump({"pid": os.getpid(), "draw": float(np.random.rand()), "argv": sys.argv[1:],
           "cwd": os.getcwd()}, open("seen.json", "w"))
sys.exit(int(sys.argv[1]))
"""


async def _run(tmp_path: Path) -> dict[str, object]:
    forks = ForkServer()
    await forks.start()
    try:
        out: dict[str, object] = {}
        for name, code in (("a", "0"), ("b", "3")):
            folder = tmp_path / name
            folder.mkdir()
            (folder / "task.py").write_text(TASK)
            task = await forks.fork(name, ["task.py", code], folder, folder / "task.log")
            out[name] = (task.pid, await task.wait())
        crash = tmp_path / "c"
        crash.mkdir()
        (crash / "task.py").write_text("raise RuntimeError('user code broke')\n")
        task = await forks.fork("c", ["task.py"], crash, crash / "task.log")
        out["c"] = (task.pid, await task.wait())
        sleeper = tmp_path / "d"
        sleeper.mkdir()
        (sleeper / "task.py").write_text("import time\nprint('up', flush=True)\ntime.sleep(600)\n")
        task = await forks.fork("d", ["task.py"], sleeper, sleeper / "task.log")
        log = sleeper / "task.log"
        while not log.exists() or "up" not in log.read_text():
            await asyncio.sleep(0.02)
        task.kill()
        out["d"] = (task.pid, await task.wait())
        return out
    finally:
        await forks.close()


def test_each_task_is_its_own_process(tmp_path: Path) -> None:
    ended = asyncio.run(_run(tmp_path))
    seen = {n: json.loads((tmp_path / n / "seen.json").read_text()) for n in ("a", "b")}
    assert ended["a"] == (seen["a"]["pid"], 0) and ended["b"] == (seen["b"]["pid"], 3)
    assert len({seen["a"]["pid"], seen["b"]["pid"], os.getpid()}) == 3
    assert seen["a"]["draw"] != seen["b"]["draw"]  # NumPy reseeded in each fork
    assert seen["b"]["argv"] == ["3"] and seen["b"]["cwd"] == str(tmp_path / "b")
    log = (tmp_path / "b" / "task.log").read_text()
    assert f"out {seen['b']['pid']}" in log and "err" in log  # stdout and stderr, in its log
    assert ended["c"][1] == 1
    assert "RuntimeError: user code broke" in (tmp_path / "c" / "task.log").read_text()
    assert ended["d"][1] == -9  # killed alone (SIGKILL)
