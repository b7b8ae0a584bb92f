"""Distributed logs: what retention costs an append, and what shipping costs a log call.

* Store: 20,000 lines appended in batches of 500 (what a flamelet or the shipper sends) to a
  SQLite file store and to mongomock-motor, without caps and with caps that keep deleting
  (per job 5,000, in total 8,000, over 4 jobs); lines per second, lines left, dropped.
* Shipper: microseconds per structlog call with and without the shipping processor, for an
  event about a job (queued) and one about nothing (passed on).
Usage: python -m benchmarks.log_store
"""

from __future__ import annotations

import asyncio
import io
import tempfile
import time
from pathlib import Path
from typing import Any

import structlog

from flame_controller.store import LogLineRecord, LogRetention, open_store
from flame_service.logging import configure_logging
from flame_service.logship import LogShipper

LINES = 20_000
BATCH = 500
JOBS = 4


async def _append(uri: str, blob_dir: str, retention: LogRetention | None) -> dict[str, Any]:
    client = None
    if uri.startswith("mongodb"):
        from mongomock_motor import AsyncMongoMockClient

        client = AsyncMongoMockClient()
    store = await open_store(uri, blob_dir, client=client, log_retention=retention)
    try:
        started = time.perf_counter()
        for n in range(LINES // BATCH):
            job = f"job-{n % JOBS}"
            lines = [
                LogLineRecord(job_id=job, task_id="t", line=f"line {n}:{i} " + "x" * 80)
                for i in range(BATCH)
            ]
            await store.append_logs(lines)
        seconds = time.perf_counter() - started
        kept = 0
        dropped = 0
        for j in range(JOBS):
            after = 0
            while page := await store.read_logs(f"job-{j}", after_seq=after, limit=5000):
                kept += len(page)
                after = page[-1].seq
            dropped += await store.log_dropped(f"job-{j}")
    finally:
        await store.close()
    return {"lines_per_s": round(LINES / seconds), "kept": kept, "dropped": dropped}


def _per_call(shipper: LogShipper | None, **fields: Any) -> float:
    configure_logging("bench", "info", json=True, shipper=shipper)
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=io.StringIO()))
    log = structlog.get_logger("bench")
    n = 20_000
    started = time.perf_counter()
    for i in range(n):
        log.info("bench.event", i=i, **fields)
    return (time.perf_counter() - started) / n * 1e6


def main() -> dict[str, Any]:
    caps = LogRetention(per_job=5000, total=8000)
    store: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, uri in (
            ("sqlite-file", f"sqlite:///{Path(tmp) / 'a.db'}"),
            ("mongomock", "mongodb://localhost/bench"),
        ):
            store[name] = {
                "no caps": asyncio.run(_append(uri, tmp, None)),
                "caps 5000/job, 8000 total": asyncio.run(
                    _append(uri.replace("a.db", "b.db"), tmp, caps)
                ),
            }
    shipping = {
        "us per call, no shipper": round(_per_call(None, job_id="j"), 2),
        "us per call, event about a job": round(
            _per_call(LogShipper(capacity=10**6), job_id="j"), 2
        ),
        "us per call, event about no job": round(_per_call(LogShipper()), 2),
    }
    configure_logging("bench", "info")
    capped = "caps 5000/job, 8000 total"
    sqlite, mongo = store["sqlite-file"], store["mongomock"]
    bare = shipping["us per call, no shipper"]
    row = (
        f"| log_store | {LINES:,} lines appended in batches of {BATCH}, lines/s without caps / "
        f"with caps deleting: SQLite {sqlite['no caps']['lines_per_s']:,} / "
        f"{sqlite[capped]['lines_per_s']:,}, mongomock "
        f"{mongo['no caps']['lines_per_s']:,} / {mongo[capped]['lines_per_s']:,}"
        f"; a log call with shipping "
        f"{shipping['us per call, event about a job'] / bare:.2f}x one without ({bare:.0f} us) "
        "| shipping ~1x a log call |"
    )
    return {
        "lines": LINES,
        "batch": BATCH,
        "jobs": JOBS,
        "store": store,
        "shipping": shipping,
        "table_row": row,
    }


if __name__ == "__main__":
    from benchmarks.run import save

    started = time.perf_counter()
    save("log_store", main(), time.perf_counter() - started)
