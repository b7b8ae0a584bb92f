"""Child processes of tasks: spawn in their own session, check, and stop whole process groups."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

import flamelet
from flame_service.process_identity import live_process, process_start_id
from flame_spec.privacy import without_telemetry

EXIT_FILE = "exit_code"
STDOUT_FILE = "stdout.log"
STDERR_FILE = "stderr.log"
ENV_PASSTHROUGH = ("PATH", "LANG", "LC_ALL")


@dataclass(frozen=True)
class Limits:
    max_open_files: int = 1024
    cpu_seconds: int | None = None
    address_space_bytes: int | None = None


@dataclass(frozen=True)
class Started:
    pid: int
    create_time: float
    start_id: str | None
    process: asyncio.subprocess.Process


def clean_env(workdir: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """PATH, LANG, HOME=workdir, TMPDIR in the work dir, and ``FLAME_*`` only."""
    env = {k: os.environ[k] for k in ENV_PASSTHROUGH if k in os.environ}
    env.update({k: v for k, v in os.environ.items() if k.startswith("FLAME_")})
    tmp = workdir / "tmp"
    tmp.mkdir(exist_ok=True)
    env.update(HOME=str(workdir), TMPDIR=str(tmp))
    env.update(extra or {})
    return without_telemetry(env)


async def spawn(
    cmd: list[str],
    workdir: Path,
    env: dict[str, str],
    limits: Limits,
    stdin: int = asyncio.subprocess.DEVNULL,
) -> Started:
    """Start ``cmd`` under ``flamelet.supervise`` in its own session, cwd = ``workdir``,
    stdout/stderr appended to files in ``workdir``; ``stdin=PIPE`` gives the caller a pipe to
    it (a warm runner's order, :mod:`flamelet.warm`)."""
    sup = [
        sys.executable,
        "-m",
        "flamelet.supervise",
        str(workdir / EXIT_FILE),
        str(limits.max_open_files),
        str(limits.cpu_seconds or 0),
        str(limits.address_space_bytes or 0),
        "--",
        *cmd,
    ]
    # The supervisor is the flamelet's own interpreter: make sure it can import flamelet even
    # with the clean environment (the task command itself gets the env unchanged).
    sup_env = dict(env)
    pkg_root = str(Path(flamelet.__file__).resolve().parent.parent)
    sup_env["PYTHONPATH"] = pkg_root
    with (workdir / STDOUT_FILE).open("ab") as out, (workdir / STDERR_FILE).open("ab") as err:
        proc = await asyncio.create_subprocess_exec(
            *sup,
            cwd=workdir,
            env=sup_env,
            stdin=stdin,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
    start_id = process_start_id(proc.pid)
    try:
        create_time = psutil.Process(proc.pid).create_time()
    except psutil.NoSuchProcess:  # already exited and reaped: the exit file tells the outcome
        create_time = time.time()
    return Started(pid=proc.pid, create_time=create_time, start_id=start_id, process=proc)


def alive(pid: int, create_time: float | None, start_id: str | None = None) -> bool:
    """Is ``pid`` still the process we started (not a recycled pid, not a zombie)?

    Recognised by ``start_id`` (:func:`process_start_id`) when it was recorded. Without it,
    by psutil's ``create_time`` with 1 s of slack: that one is derived from the wall clock's
    idea of the boot time, so a clock stepped by more (NTP, a resumed VM) makes a running
    task look gone."""
    return live_process(pid, create_time, start_id, tolerance=1.0) is not None


def group_pids(pgid: int) -> list[int]:
    out = []
    for proc in psutil.process_iter(["pid"]):
        with contextlib.suppress(psutil.Error, ProcessLookupError, PermissionError):
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                out.append(proc.pid)
    return out


async def stop_group(
    pid: int, create_time: float | None, start_id: str | None, grace: float
) -> str:
    """SIGTERM the task's process group, SIGKILL what is left after ``grace`` seconds.

    Returns what happened, for the status reason."""
    if not alive(pid, create_time, start_id):
        return "already exited"
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:  # poll: the group's members are not our children
        if not group_pids(pid):
            return "stopped with SIGTERM"
        await asyncio.sleep(0.05)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:  # the kernel reaps SIGKILLed processes promptly
        if not group_pids(pid):
            break
        await asyncio.sleep(0.05)
    return f"killed with SIGKILL after {grace:g}s"


def read_exit_code(workdir: Path) -> int | None:
    try:
        return int((workdir / EXIT_FILE).read_text().strip())
    except (OSError, ValueError):
        return None
