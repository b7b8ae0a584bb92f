"""The local deployer's warm runners: task processes started before their task.

A deployer-run task (an aggregator, a coordinator) used to start its interpreter and import the
SDK only once its job had started: half a second of CPU, two seconds and more on a host that
is starting the job's other tasks at the same time, while every trainer waited for it. A warm
runner is that process started ahead, the way the task's own would be (``run.sh`` in the
sandbox, which shows it only its own work dir; a clean environment; a session of its own),
running ``python -m flame.warm`` (:mod:`flame.warm`): it imports the SDK, then waits for one
order on its stdin.

When a task comes, the deployer unpacks it into the runner's work dir, records the runner as
the task's process (``process.json``), links the task's folder to the runner's and only then
writes the order (:meth:`LocalDeployer._start_warm`), so a controller that dies in between
finds the task's process when it starts again. A runner serves one task and is never reused.
A runner whose controller went away reads the end of its input and exits (75) without running
anything; the next controller removes the folders of runners that were never handed a task.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog

from flame_spec.warm import failed_unused, order_line

from .processes import ProcessId

log = structlog.get_logger(__name__)

RECORD = "process.json"  # written in a runner's folder when it is handed a task


@dataclass(frozen=True)
class WarmRunner:
    workdir: Path
    child: subprocess.Popen[bytes]
    ident: ProcessId


Spawn = Callable[[Path], WarmRunner]  # starts a runner in this (new, empty) folder


class WarmRunners:
    """Up to ``size`` idle runners in ``folder``, each in a sub-folder of its own."""

    def __init__(self, folder: Path, size: int) -> None:
        self.folder = folder
        self.size = size
        self._idle: list[WarmRunner] = []
        self._lock = threading.Lock()
        self._filling = threading.Lock()
        self.closed = False
        self.broken = False  # a runner failed before its order: this Python cannot run them
        self.handed = 0  # tasks that ran in a warm runner

    def idle(self) -> int:
        with self._lock:
            return len(self._idle)

    def fill(self, spawn: Spawn) -> None:
        """Start runners until ``size`` are idle (at most one filler at a time)."""
        if not self._filling.acquire(blocking=False):
            return
        try:
            while not (self.closed or self.broken):
                with self._lock:
                    self._idle = [r for r in self._idle if self._alive(r)]
                    if len(self._idle) >= self.size:
                        return
                workdir = self.folder / uuid.uuid4().hex[:16]
                workdir.mkdir(parents=True, mode=0o700)
                try:
                    runner = spawn(workdir)
                except OSError as exc:
                    shutil.rmtree(workdir, ignore_errors=True)
                    log.warning("deployer.warm_start_failed", error=str(exc))
                    return
                with self._lock:
                    if not self.closed:
                        self._idle.append(runner)
                if self.closed:  # closed while it started
                    discard(runner)
                    return
                log.info("deployer.warm_ready", pid=runner.ident.pid)
        finally:
            self._filling.release()

    def take(self) -> WarmRunner | None:
        """An idle, live runner, now the caller's; or None."""
        with self._lock:
            while self._idle:
                runner = self._idle.pop(0)
                if self._alive(runner):
                    return runner
        return None

    def hand_over(self, runner: WarmRunner, argv: list[str], env: dict[str, str]) -> None:
        """Write the order (``argv`` after the interpreter, ``env`` added) and close the
        runner's input. Raises :class:`OSError` when the runner is gone."""
        stdin = runner.child.stdin
        assert stdin is not None
        try:
            stdin.write(order_line(argv, env))
            stdin.flush()
        finally:
            with contextlib.suppress(OSError):
                stdin.close()
        self.handed += 1

    def _alive(self, runner: WarmRunner) -> bool:
        """Whether the runner still waits for its order; a dead one is cleaned up. One that
        failed on its own (not killed, not told its controller went away) means this node's
        Python cannot run runners (no SDK, say): stop starting them, and say why once."""
        code = runner.child.poll()
        if code is None:
            return True
        if failed_unused(code) and not self.broken:
            self.broken = True
            try:
                stderr = (runner.workdir / "stderr.log").read_text(errors="replace")[-2000:]
            except OSError:
                stderr = ""
            log.warning("deployer.warm_disabled", exit_code=code, stderr=stderr)
        shutil.rmtree(runner.workdir, ignore_errors=True)
        return False

    def close(self) -> None:
        """Kill the idle runners (their whole process groups) and remove their folders."""
        self.closed = True
        with self._lock:
            idle, self._idle = self._idle, []
        for runner in idle:
            discard(runner)

    def remove_stale(self) -> None:
        """Remove what runners of an earlier controller left that no task took (a folder
        without ``process.json``); their processes exit on their own at the end of input."""
        with self._lock:
            ours = {r.workdir for r in self._idle}
        with contextlib.suppress(FileNotFoundError):
            for path in self.folder.iterdir():
                if path.is_dir() and path not in ours and not (path / RECORD).exists():
                    shutil.rmtree(path, ignore_errors=True)


def discard(runner: WarmRunner) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(runner.ident.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        runner.child.wait(10.0)
    if runner.child.stdin is not None:
        with contextlib.suppress(OSError):
            runner.child.stdin.close()
    shutil.rmtree(runner.workdir, ignore_errors=True)
