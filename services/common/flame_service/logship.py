"""Ship a service's log events about jobs into the controller's log store.

:class:`LogShipper` is a structlog processor: every event that carries a ``job_id`` (bound with
contextvars or passed to the call) is copied into a bounded in-memory queue and the event goes
on to the local log unchanged.  :meth:`LogShipper.run` sends the queue in batches to a sink (the
controller writes to its store, the apiserver and the notifier call ``AppendServiceLogs``).
Nothing waits for the sink: a slow or absent controller only fills the queue, whose oldest lines
then go first and are counted in :attr:`LogShipper.dropped`.  A batch the sink refused is kept
and sent again (at least once).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog

log = structlog.get_logger(__name__)

# Fields that become columns of the stored line rather than part of its text.
_COLUMNS = frozenset({"event", "level", "timestamp", "service", "job_id", "task_id", "node_id"})
MAX_TEXT = 8192  # characters of one shipped line

# Set inside the shipping task: its own events (and the sink's) are never shipped again.
_shipping: ContextVar[bool] = ContextVar("flame_log_shipping", default=False)


@dataclass(frozen=True)
class ShippedLine:
    job_id: str
    level: str
    line: str
    task_id: str = ""
    node_id: str = ""
    at: datetime = field(default_factory=lambda: datetime.now(UTC))


Sink = Callable[[Sequence[ShippedLine]], Awaitable[object]]


def _text(value: Any) -> str:
    if isinstance(value, str) and value and not any(c.isspace() or c in '"=' for c in value):
        return value
    return json.dumps(value, default=str, ensure_ascii=False)


def render(event: MutableMapping[str, Any]) -> str:
    """``event key=value ...``: the event name, then its other fields in the order given."""
    parts = [str(event.get("event", ""))]
    parts += [f"{k}={_text(v)}" for k, v in event.items() if k not in _COLUMNS]
    return " ".join(parts)[:MAX_TEXT]


def _id(value: Any) -> str:
    return value if isinstance(value, str) else ""


# queued: an event (or a line already made, when a refused batch is put back), its method, time
_Pending = tuple[dict[str, Any] | ShippedLine, str, datetime]


def _line(event: dict[str, Any] | ShippedLine, method_name: str, at: datetime) -> ShippedLine:
    if isinstance(event, ShippedLine):
        return event
    return ShippedLine(
        job_id=_id(event.get("job_id")),
        level=str(event.get("level", method_name)),
        line=render(event),
        task_id=_id(event.get("task_id")),
        node_id=_id(event.get("node_id")),
        at=at,
    )


class LogShipper:
    """A structlog processor and the loop that empties its queue (see the module doc)."""

    def __init__(
        self,
        *,
        capacity: int = 20_000,
        batch: int = 500,
        interval: float = 0.5,
        timeout: float = 10.0,
    ) -> None:
        self.capacity = capacity
        self.batch = batch
        self.interval = interval
        self.timeout = timeout
        self.dropped = 0  # lines that never reached the sink (queue full)
        self.shipped = 0
        self._queue: deque[_Pending] = deque()
        self._lock = threading.Lock()  # events may be logged from worker threads
        self._failing = False

    def __call__(
        self, logger: Any, method_name: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        if _id(event.get("job_id")) and not _shipping.get():
            # a shallow copy and the time: the text is made later, in the shipping task
            pending = (dict(event), method_name, datetime.now(UTC))
            with self._lock:
                self._queue.append(pending)
                self._trim()
        return event

    def _trim(self) -> None:
        while len(self._queue) > self.capacity:
            self._queue.popleft()
            self.dropped += 1

    @property
    def pending(self) -> int:
        return len(self._queue)

    def _take(self) -> list[ShippedLine]:
        with self._lock:
            n = min(self.batch, len(self._queue))
            taken = [self._queue.popleft() for _ in range(n)]
        return [_line(*pending) for pending in taken]

    def _put_back(self, lines: Sequence[ShippedLine]) -> None:
        with self._lock:
            self._queue.extendleft(reversed([(line, "", line.at) for line in lines]))
            while len(self._queue) > self.capacity:  # the newest are kept: drop from the front
                self._queue.popleft()
                self.dropped += 1

    async def flush(self, sink: Sink) -> bool:
        """Send everything queued; False when the sink failed (the batch stays queued)."""
        token = _shipping.set(True)
        try:
            while batch := self._take():
                try:
                    await asyncio.wait_for(sink(batch), self.timeout)
                except Exception as exc:  # the sink is down or slow: keep the lines, try later
                    self._put_back(batch)
                    if not self._failing:
                        log.warning("logs.ship_failed", error=f"{type(exc).__name__}: {exc}")
                    self._failing = True
                    return False
                self.shipped += len(batch)
                if self._failing:
                    log.info("logs.ship_resumed", dropped=self.dropped)
                    self._failing = False
            return True
        finally:
            _shipping.reset(token)

    async def run(self, sink: Sink) -> None:
        """Flush every ``interval`` seconds until cancelled (then once more, briefly)."""
        try:
            while True:
                await asyncio.sleep(self.interval)
                await self.flush(sink)
        finally:  # on the way out, what is queued gets one short chance
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.flush(sink), min(self.timeout, 2.0))
