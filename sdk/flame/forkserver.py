"""One interpreter that imports the SDK once and forks a process per task, for local runs.

``flame.simulate(..., processes=True)`` (``flamectl run --local --processes``) runs each task
in its own process. Started cold, each of them spends about half a second of CPU (two on a
loaded machine) starting Python and importing the SDK before its first message: most of a
short run. Here one server process (``python -m flame.forkserver``) imports ``flame.launch``
once and forks each task from that state, so a task starts in milliseconds and is still a
process of its own (its own memory, its own exit status, killable alone).

This is for a user's own machine and code, like the rest of ``flame.simulate``: nodes never
fork tasks from a shared process (a node's tasks are separated from each other by the sandbox,
see ``flamelet.warm``).

The server reads one JSON order per line on stdin (``id``, ``argv`` after the interpreter as
in :mod:`flame.warm`, ``cwd``, ``log``: the file the task's stdout and stderr go to) and
writes JSON lines on stdout: ``{"id": ..., "pid": ...}`` once forked and
``{"pid": ..., "exit": code}`` when it ended (``-N``: killed by signal N). At the end of its
input it waits for its tasks and exits. A forked task gets fresh random state (NumPy's
global generator is reseeded from the OS, as a new interpreter's would be).

``python -m flame.forkserver [URI ...]``: the generated datasets named (``digits://iid/10/3``,
:func:`flame.datasets.load_shard`) are made once, before any fork, so that ten trainers of
a local run do not each import scikit-learn and split the same data (a second of CPU each).
They are pure functions of their URI; a URI that fails is left for its task to report.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import select
import signal
import sys
import traceback
from pathlib import Path
from typing import Any

from flame.datasets import is_generated
from flame.warm import run, warm_up


def _child(order: dict[str, Any]) -> int:
    """In the forked process: become the task, run it, return its exit status."""
    os.setpgid(0, 0)  # its own process group, as a task started cold by simulate is killed alone
    fd = os.open(order["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.chdir(order["cwd"])
    if "numpy.random" in sys.modules:  # fresh entropy: forked tasks must not share a stream
        sys.modules["numpy.random"].seed()
    try:
        run(order["argv"])
    except SystemExit as exc:
        code = exc.code
        if code is None:
            return 0
        if isinstance(code, int):
            return code
        print(code, file=sys.stderr)
        return 1
    except BaseException:
        traceback.print_exc()
        return 1
    return 0


def _leave_child(order: dict[str, Any]) -> None:
    code = 1
    try:
        code = _child(order)
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)


def prepare(datasets: list[str]) -> None:
    from flame.datasets import load_shard

    for uri in datasets:
        with contextlib.suppress(Exception):  # its task reports what is wrong with it
            load_shard(uri)


def serve(datasets: list[str]) -> int:
    """The server's loop: fork on each order, report exits, end when input ends and no task
    is left. Single-threaded (fork and threads do not mix): SIGCHLD wakes the select."""
    warm_up([])
    prepare(datasets)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    out = sys.stdout
    children: set[int] = set()
    reading = True
    pending = b""
    while reading or children:
        watched = [wake_r] + ([0] if reading else [])
        ready, _, _ = select.select(watched, [], [], 1.0)
        if wake_r in ready:
            with contextlib.suppress(BlockingIOError):
                os.read(wake_r, 4096)
        if 0 in ready:
            data = os.read(0, 65536)
            if not data:
                reading = False
            pending += data
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                if not line.strip():
                    continue
                order = json.loads(line)
                out.flush()
                pid = os.fork()
                if pid == 0:
                    signal.set_wakeup_fd(-1)
                    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                    os.close(wake_r)
                    os.close(wake_w)
                    _leave_child(order)
                children.add(pid)
                out.write(json.dumps({"id": order["id"], "pid": pid}) + "\n")
                out.flush()
        while children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            children.discard(pid)
            out.write(json.dumps({"pid": pid, "exit": os.waitstatus_to_exitcode(status)}) + "\n")
            out.flush()
    return 0


class ForkedTask:
    """A task the server forked: its pid, and its exit status once known."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._ended = asyncio.get_running_loop().create_future()

    def ended(self, code: int) -> None:
        self.returncode = code
        if not self._ended.done():
            self._ended.set_result(code)

    async def wait(self) -> int:
        return int(await asyncio.shield(self._ended))

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)


class ForkServer:
    """The caller's side: start the server, fork tasks, learn how they end."""

    def __init__(self, datasets: list[str] | None = None) -> None:
        self.datasets = [uri for uri in datasets or [] if is_generated(uri)]
        self._proc: asyncio.subprocess.Process | None = None
        self._tasks: dict[int, ForkedTask] = {}
        self._forked: dict[str, asyncio.Future[int]] = {}
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "flame.forkserver",
            *self.datasets,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        self._reader = asyncio.create_task(self._read())

    async def fork(self, task_id: str, argv: list[str], cwd: Path, log: Path) -> ForkedTask:
        """Run ``argv`` (after the interpreter) in a new process in ``cwd``, output to ``log``."""
        assert self._proc is not None and self._proc.stdin is not None
        forked = asyncio.get_running_loop().create_future()
        self._forked[task_id] = forked
        order = {"id": task_id, "argv": argv, "cwd": str(cwd), "log": str(log)}
        self._proc.stdin.write(json.dumps(order).encode() + b"\n")
        await self._proc.stdin.drain()
        pid = await forked
        return self._tasks[pid]

    async def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        async for line in self._proc.stdout:
            msg = json.loads(line)
            if "id" in msg:
                self._tasks[msg["pid"]] = ForkedTask(msg["pid"])
                self._forked.pop(msg["id"]).set_result(msg["pid"])
            elif msg.get("pid") in self._tasks:
                self._tasks[msg["pid"]].ended(int(msg["exit"]))
        for forked in self._forked.values():  # the server died before it forked them
            forked.set_exception(RuntimeError("the fork server ended"))
        for task in self._tasks.values():
            task.ended(task.returncode if task.returncode is not None else -signal.SIGKILL)

    async def close(self) -> None:
        """Kill what still runs; the server then ends."""
        for task in self._tasks.values():
            if task.returncode is None:
                task.kill()
        if self._proc is not None:
            if self._proc.stdin is not None:
                self._proc.stdin.close()
            try:
                await asyncio.wait_for(self._proc.wait(), 30)
            except TimeoutError:
                self._proc.kill()
                await self._proc.wait()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)


if __name__ == "__main__":
    sys.exit(serve(sys.argv[1:]))
