"""Which process a pid is, whatever the wall clock does.

psutil's ``create_time`` is the boot time plus the start tick, and it takes the boot time from
the wall clock: a clock stepped while we were not looking (NTP, a resumed VM) moves it, so a
running task looks gone. The boot id and the start tick in ``/proc`` do not move, and a reused
pid has another start tick.
"""

from __future__ import annotations

from pathlib import Path


def process_start_id(pid: int) -> str | None:
    """``<boot id>:<start tick>`` of ``pid`` (Linux ``/proc``; None without it or once gone)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()  # after "pid (comm)": the name may hold anything
    return f"{boot}:{fields[19]}" if len(fields) > 19 else None  # field 22: starttime
