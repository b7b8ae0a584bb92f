"""The log shipper: which events it takes, its bounded queue, and a sink that fails or hangs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Sequence

import pytest
import structlog

from flame_service.logging import configure_logging
from flame_service.logship import LogShipper, ShippedLine, render

log = structlog.get_logger("test")


@pytest.fixture
def shipper() -> Iterator[LogShipper]:
    shipper = LogShipper(capacity=50, batch=20, interval=0.01, timeout=0.5)
    configure_logging("controller", "info", json=True, shipper=shipper)
    try:
        yield shipper
    finally:
        structlog.contextvars.clear_contextvars()
        configure_logging("controller", "info", json=True)


class Sink:
    def __init__(self, fail: int = 0, hang: bool = False) -> None:
        self.fail, self.hang = fail, hang
        self.got: list[ShippedLine] = []
        self.calls = 0

    async def __call__(self, lines: Sequence[ShippedLine]) -> None:
        self.calls += 1
        if self.hang:
            await asyncio.Event().wait()
        if self.fail:
            self.fail -= 1
            raise ConnectionError("controller away")
        self.got += lines


def test_only_events_about_a_job_are_taken(shipper: LogShipper) -> None:
    log.info("service.started", port=1)
    log.debug("task.detail", job_id="j1")  # below the level: not even logged
    log.warning("task.lost", job_id="j1", task_id="t1", node_id="n1", reason="gone away")
    with structlog.contextvars.bound_contextvars(job_id="j2"):
        log.info("job.reconciled", state="running")
    lines = shipper._take()
    assert [(x.job_id, x.level, x.task_id, x.node_id) for x in lines] == [
        ("j1", "warning", "t1", "n1"),
        ("j2", "info", "", ""),
    ]
    assert lines[0].line == 'task.lost reason="gone away"'
    assert lines[1].line == "job.reconciled state=running"


def test_render_keeps_the_fields_readable() -> None:
    text = render({"event": "x.y", "job_id": "j", "n": 3, "why": "a b", "ok": True, "k": "v"})
    assert text == 'x.y n=3 why="a b" ok=true k=v'


def test_a_full_queue_drops_the_oldest_and_counts_them(shipper: LogShipper) -> None:
    for i in range(60):
        log.info("tick", job_id="j", i=i)
    assert shipper.pending == 50 and shipper.dropped == 10
    assert shipper._take()[0].line == "tick i=10"


async def test_a_failing_sink_gets_the_lines_again_in_order(shipper: LogShipper) -> None:
    sink = Sink(fail=3)
    for i in range(45):
        log.info("tick", job_id="j", i=i)
    runner = asyncio.create_task(shipper.run(sink))
    deadline = time.monotonic() + 30
    while len(sink.got) < 45:
        assert time.monotonic() < deadline, f"{len(sink.got)} lines shipped"
        await asyncio.sleep(0.01)
    runner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await runner
    assert [x.line for x in sink.got] == [f"tick i={i}" for i in range(45)]
    assert sink.calls >= 3 + 3  # three refusals, then three batches of at most 20
    assert shipper.shipped == 45 and shipper.dropped == 0


async def test_a_hanging_sink_never_holds_up_logging(shipper: LogShipper) -> None:
    sink = Sink(hang=True)
    log.info("tick", job_id="j", i=-1)
    runner = asyncio.create_task(shipper.run(sink))
    deadline = time.monotonic() + 30
    while sink.calls == 0:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    for i in range(200):  # the sink is stuck in a call meanwhile; logging goes on
        log.info("tick", job_id="j", i=i)
    assert shipper.pending == shipper.capacity and shipper.dropped == 200 - 50
    runner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await runner
    assert sink.got == []


async def test_the_shippers_own_events_are_not_shipped_again(shipper: LogShipper) -> None:
    async def noisy(lines: Sequence[ShippedLine]) -> None:
        log.info("sink.wrote", job_id="j", n=len(lines))  # e.g. the store logging the write

    log.info("first", job_id="j")
    assert await shipper.flush(noisy)
    assert shipper.pending == 0
