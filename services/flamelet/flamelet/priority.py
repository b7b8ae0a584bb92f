"""CPU priority of warm runners: they start at Linux's ``SCHED_IDLE`` and are raised back to the
normal policy when their task is handed over.

A runner is refilled as soon as a task ends, and importing the SDK costs about half a second
of CPU. When ten trainers of one job end together on one machine (``flamectl up --nodes 10``),
ten refills took the cores from the job's own end (its aggregator uploading the model, the
control plane completing the job): 1.0-1.5 s longer than with cold starts. At ``SCHED_IDLE``
a refill only gets CPU nobody else wants.

Going back from ``SCHED_IDLE`` to the normal policy needs ``CAP_SYS_NICE`` (root, or a granted
capability); an unprivileged agent cannot, and a task must never run at idle priority, so the
agent probes once (:func:`can_leave_idle`) and otherwise starts runners at normal priority.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import psutil


def _set(tid: int, policy: int) -> None:
    os.sched_setscheduler(tid, policy, os.sched_param(0))


def can_leave_idle() -> bool:
    """Whether this process may take a thread out of ``SCHED_IDLE``: tried on a throwaway
    thread (the policy is per thread), never on the agent's own."""
    if not hasattr(os, "SCHED_IDLE"):
        return False
    able: list[bool] = []

    def probe() -> None:
        try:
            _set(0, os.SCHED_IDLE)
            _set(0, os.SCHED_OTHER)
        except OSError:
            able.append(False)
        else:
            able.append(True)

    thread = threading.Thread(target=probe, name="flamelet-priority-probe")
    thread.start()
    thread.join()
    return able == [True]


def _threads(pid: int) -> list[int]:
    try:
        return [int(t.name) for t in Path(f"/proc/{pid}/task").iterdir()]
    except OSError:  # gone
        return []


def leave_idle(pid: int) -> int:
    """Put every thread of ``pid`` and of its descendants back to the normal policy; returns how
    many were changed. Two passes: a thread started during the first by a thread still idle
    was born idle."""
    changed = 0
    for _ in range(2):
        try:
            procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            return changed
        for proc in procs:
            for tid in _threads(proc.pid):
                try:
                    if os.sched_getscheduler(tid) == os.SCHED_IDLE:
                        _set(tid, os.SCHED_OTHER)
                        changed += 1
                except OSError:  # the thread ended meanwhile
                    pass
    return changed
