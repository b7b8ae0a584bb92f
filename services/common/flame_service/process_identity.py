"""Which process a pid is, whatever the wall clock does.

psutil's ``create_time`` is the boot time plus the start tick, and it takes the boot time from
the wall clock: a clock stepped while we were not looking (NTP, a resumed VM) moves it, so a
running task looks gone. The boot id and the start tick in ``/proc`` do not move, and a reused
pid has another start tick.
"""

from __future__ import annotations

from pathlib import Path

import psutil


def process_start_id(pid: int) -> str | None:
    """``<boot id>:<start tick>`` of ``pid`` (Linux ``/proc``; None without it or once gone)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()  # after "pid (comm)": the name may hold anything
    return f"{boot}:{fields[19]}" if len(fields) > 19 else None  # field 22: starttime


def live_process(
    pid: int, create_time: float | None, start_id: str | None, tolerance: float
) -> psutil.Process | None:
    """The live (not zombie) process ``pid`` if it is the one recorded: by ``start_id`` when
    there is one, else by psutil's ``create_time`` within ``tolerance`` seconds (records made
    before start ids; that one moves with the wall clock). None when gone or a reused pid."""
    try:
        proc = psutil.Process(pid)
        if start_id is not None:
            if process_start_id(pid) != start_id:
                return None
        elif create_time is not None and abs(proc.create_time() - create_time) > tolerance:
            return None
        return None if proc.status() == psutil.STATUS_ZOMBIE else proc
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
