"""How the flamelet recognises a task process it started (runner.alive)."""

from __future__ import annotations

import subprocess
import sys

import psutil
import pytest

from flamelet import runner


def test_a_process_is_known_by_its_start_whatever_the_wall_clock(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        start_id = runner.process_start_id(proc.pid)
        create_time = psutil.Process(proc.pid).create_time()
        assert start_id is not None
        assert runner.alive(proc.pid, create_time, start_id)
        assert runner.alive(proc.pid, create_time)  # a ledger written before start ids
        boot, _ticks = start_id.rsplit(":", 1)
        assert not runner.alive(proc.pid, create_time, f"{boot}:1")  # same pid, another process
        boot_time = psutil._pslinux.boot_time
        monkeypatch.setattr("psutil._pslinux.boot_time", lambda: boot_time() - 30.0)
        assert runner.alive(proc.pid, create_time, start_id)  # the wall clock stepped back
    finally:
        proc.kill()
        proc.wait()
    assert not runner.alive(proc.pid, create_time, start_id)
