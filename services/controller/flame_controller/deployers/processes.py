"""The local deployer's task processes: how a handle names one, and waiting for, signalling
and describing them (psutil), as plain functions."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from flame_service.taskdir import describe_exit, failure_line


@dataclass(frozen=True)
class ProcessId:
    """A process as it was started: its pid and start (a pid alone may be reused).

    ``start_id`` (:func:`flame_service.process_identity.process_start_id`) names it whatever
    the wall clock does; identities recorded before it existed have only ``create_time``."""

    pid: int
    create_time: float
    start_id: str | None = None


@dataclass(frozen=True)
class LocalHandle:
    """What a local handle says: whose task, and which process (if it was started)."""

    job_id: str
    task_id: str
    ident: ProcessId | None

    def encode(self) -> str:
        body: dict[str, Any] = {"job": self.job_id, "task": self.task_id}
        if self.ident is not None:
            body.update(pid=self.ident.pid, ct=self.ident.create_time)
            if self.ident.start_id:
                body.update(sid=self.ident.start_id)
        return json.dumps(body, separators=(",", ":"))

    @classmethod
    def decode(cls, handle: str) -> LocalHandle:
        try:
            body = json.loads(handle)
            ident = None
            if body.get("pid"):
                sid = body.get("sid")
                ident = ProcessId(int(body["pid"]), float(body["ct"]), str(sid) if sid else None)
            return cls(str(body["job"]), str(body["task"]), ident)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"not a local deployer handle: {handle!r}") from exc


def wait_gone(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait until every process has ended; return those still alive after ``timeout``.

    A zombie counts as ended: orphans are reaped by whatever is pid 1, which in a container
    may take its time (``psutil.wait_procs`` would wait for the reaping)."""
    deadline = time.monotonic() + timeout
    pause = 0.005
    while True:
        alive = [p for p in procs if is_alive(p)]
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
        pause = min(pause * 2, 0.05)


def is_alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def killpg(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def pid_free(pid: int) -> bool:
    return not psutil.pid_exists(pid)


def signal_code(code: int) -> int:
    """Popen gives -N for death by signal N; report it the shell way (128 + N)."""
    return 128 - code if code < 0 else code


def describe(code: int, workdir: Path | None = None) -> str:
    code = signal_code(code)
    text = describe_exit(code)
    why = failure_line(workdir) if workdir is not None and 0 < code <= 128 else None
    return f"{text}: {why}" if why else text
