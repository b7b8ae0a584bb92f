"""A task process leaves without the interpreter's teardown, but loses nothing a normal exit
keeps: its exit code, what it printed last, its threads' work and its exit handlers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

TASK = """
import atexit, sys, threading, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from flame.launch import leave

out = Path(sys.argv[1])

def late() -> None:
    time.sleep(0.5)
    (out / "thread").write_text("done")

threading.Thread(target=late).start()  # user code left a thread working
atexit.register(lambda: (out / "atexit").write_text("done"))
assert ThreadPoolExecutor(2).submit(lambda: 1).result() == 1  # an idle pool must not hang
print("the last words", end="")  # still in the buffer
leave(3)
"""


def test_leaving_keeps_the_exit_code_output_threads_and_exit_handlers(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", TASK, str(tmp_path)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout == "the last words"
    assert (tmp_path / "thread").read_text() == "done"
    assert (tmp_path / "atexit").read_text() == "done"
