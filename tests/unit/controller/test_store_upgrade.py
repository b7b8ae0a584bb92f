"""A SQLite store written before log lines had a source, node, level and mark opens with the
new columns added in place, and its old lines read and filter as task output."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from flame_controller.store import LogLineRecord, open_store


async def test_an_older_log_table_gains_the_new_columns(tmp_path: Path) -> None:
    path = tmp_path / "flame.db"
    store = await open_store(f"sqlite:///{path}")
    await store.close()
    with sqlite3.connect(path) as db:  # the logs table as the previous release made it
        db.execute("DROP TABLE logs")
        db.execute(
            "CREATE TABLE logs (doc_key TEXT PRIMARY KEY, doc TEXT NOT NULL"
            ", \"job_id\" GENERATED ALWAYS AS (json_extract(doc, '$.job_id')) VIRTUAL"
            ", \"task_id\" GENERATED ALWAYS AS (json_extract(doc, '$.task_id')) VIRTUAL"
            ", \"seq\" GENERATED ALWAYS AS (json_extract(doc, '$.seq')) VIRTUAL)"
        )
        db.execute(
            "INSERT INTO logs VALUES (?, ?)",
            (
                "j1:000000000001",
                '{"job_id":"j1","task_id":"t0","stream":"stdout","line":"old",'
                '"at":"2026-01-01T00:00:00.000000Z","seq":1}',
            ),
        )
        db.execute("INSERT INTO counters VALUES ('logs:j1', 1)")

    store = await open_store(f"sqlite:///{path}")
    try:
        await store.append_logs(
            [LogLineRecord(job_id="j1", task_id="", line="new", source="controller", level="info")]
        )
        lines = await store.read_logs("j1")
        assert [(x.seq, x.line, x.source) for x in lines] == [
            (1, "old", "task"),
            (2, "new", "controller"),
        ]
        assert [x.line for x in await store.read_logs("j1", source="controller")] == ["new"]
        assert [x.line for x in await store.read_logs("j1", source="task")] == ["old"]
        assert await store.last_log_mark("j1", "t0", "stdout") == 0
    finally:
        await store.close()
