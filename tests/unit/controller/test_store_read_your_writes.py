"""A write acknowledged by the SQLite-file store is visible to the very next read, even while
other coroutines keep reading (regression: interleaved statements on the reader connection
pinned an old WAL snapshot, so a freshly stored job's tasks 'vanished')."""

from __future__ import annotations

import asyncio
from pathlib import Path

from flame_controller.store import open_store, utcnow
from flame_controller.store.records import TaskRecord


def _task(job: int, i: int) -> TaskRecord:
    return TaskRecord(
        id=f"t-{job}-{i}",
        job_id=f"job-{job}",
        role="trainer",
        index=i,
        node_id=None,
        dataset_id=None,
        groups={},
        data_consumer=True,
        state="pending",
        reason="",
        transitions=[],
        version=0,
        attempt=0,
        config={},
        endpoint=None,
        pid=None,
        info={},
        created_at=utcnow(),
    )


async def test_tasks_are_readable_right_after_put_under_concurrent_reads(tmp_path: Path) -> None:
    store = await open_store(f"sqlite:///{tmp_path / 'flame.db'}")
    stop = asyncio.Event()

    async def reader() -> None:
        while not stop.is_set():
            await store.list_tasks()

    readers = [asyncio.create_task(reader()) for _ in range(3)]
    try:
        for job in range(60):
            stored = await store.put_tasks([_task(job, i) for i in range(4)])
            assert [t.id for t in stored] == [f"t-{job}-{i}" for i in range(4)]
            assert len(await store.list_tasks(job_id=f"job-{job}")) == 4
    finally:
        stop.set()
        await asyncio.gather(*readers)
        await store.close()
