"""Every write a SQLite-file store acknowledged survives a SIGKILL of the writing process.

A child process creates jobs, moves them with compare-and-set and appends log lines in a loop,
printing each write only after the store call returned.  The test kills it with SIGKILL at a
random moment, reopens the file and looks for every acknowledged write; then it lets a new child
carry on with the same file and kills that one too.
"""

from __future__ import annotations

import asyncio
import os
import random
import selectors
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from flame_controller.store import open_store

WRITER = r"""
import asyncio, sys
from flame_controller.store import JobRecord, LogLineRecord, TransitionRecord, open_store

async def main(uri: str, prefix: str) -> None:
    store = await open_store(uri)
    i = 0
    while True:
        job_id = f"{prefix}-{i}"
        await store.create_job(JobRecord(id=job_id, name=job_id, owner="alice",
                                         design_id="d", code_version=1))
        print("create", job_id, flush=True)
        moved = await store.cas_job(job_id, 0, {"state": "starting"},
                                    TransitionRecord(from_state="ready", to_state="starting"))
        print("cas", job_id, moved.version, flush=True)
        seq = await store.append_logs(
            [LogLineRecord(job_id="log-job", task_id=job_id, line=f"line {i}")])
        print("log", seq, flush=True)
        i += 1

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""

ROUNDS = 3


def _writes(lines: list[bytes]) -> list[list[str]]:
    """The acknowledged writes among the writer's output lines (log events are skipped)."""
    words = (line.decode().split() for line in lines)
    return [w for w in words if w and w[0] in {"create", "cas", "log"}]


def _run_and_kill(uri: str, prefix: str, kill_after: int, deadline: float) -> list[list[str]]:
    """Start a writer, SIGKILL it once ``kill_after`` writes are acknowledged; every line it
    acknowledged (including those printed just before the kill)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, uri, prefix],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    acknowledged: list[list[str]] = []
    buffer = b""
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while len(acknowledged) < kill_after:
            remaining = deadline - time.monotonic()
            assert remaining > 0, "writer made no progress before the deadline"
            if not sel.select(timeout=remaining):
                continue
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                stderr = proc.stderr.read().decode() if proc.stderr else ""
                raise AssertionError(f"writer exited early: {stderr}")
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            acknowledged.extend(_writes(lines))
    proc.send_signal(signal.SIGKILL)
    rest, _ = proc.communicate()
    # lines printed before the kill landed are acknowledged too; a torn last line is not
    *lines, _torn = (buffer + rest).split(b"\n")
    acknowledged.extend(_writes(lines))
    assert proc.returncode == -signal.SIGKILL
    return acknowledged


async def _missing(uri: str, acknowledged: list[list[str]]) -> list[list[str]]:
    store = await open_store(uri)
    try:
        seqs = {line.seq for line in await store.read_logs("log-job", limit=10**6)}
        jobs = {}
        cursor: str | None = None
        while True:
            page = await store.list_jobs(limit=500, after=cursor)
            jobs.update((j.id, j) for j in page.items)
            if (cursor := page.next_cursor) is None:
                break
        missing = []
        for entry in acknowledged:
            if entry[0] in {"create", "cas"}:
                found = entry[1] in jobs and (
                    entry[0] == "create" or jobs[entry[1]].version >= int(entry[2])
                )
            else:
                found = int(entry[1]) in seqs
            if not found:
                missing.append(entry)
        return missing
    finally:
        await store.close()


def test_acknowledged_writes_survive_sigkill(tmp_path: Path) -> None:
    db = tmp_path / "flame.db"
    uri = f"sqlite:///{db}"
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    started = time.monotonic()
    deadline = started + 120
    total_acked = total_found = 0
    for round_no in range(ROUNDS):
        acknowledged = _run_and_kill(uri, f"r{round_no}", rng.randint(30, 600), deadline)
        missing = asyncio.run(_missing(uri, acknowledged))
        assert missing == [], f"seed {seed}: acknowledged writes lost after SIGKILL: {missing[:5]}"
        total_acked += len(acknowledged)
        total_found += len(acknowledged) - len(missing)
        with sqlite3.connect(db) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    elapsed = time.monotonic() - started
    print(
        f"durability seed={seed}: {ROUNDS} SIGKILLs, {total_acked} writes acknowledged, "
        f"{total_found} found ({elapsed:.1f} s)"
    )
    assert total_found == total_acked > 0
