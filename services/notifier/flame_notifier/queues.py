"""Per-node queues of unacknowledged events (plain asyncio, no gRPC).

Every event gets a sequence number from one counter seeded with the wall clock in ms, so the
numbers a node sees keep increasing across notifier restarts (agents ignore ``seq`` at or below
what they already handled). An event stays queued until the node acks a ``seq`` at or above it; a
(re)subscription with ``after_seq`` replays every queued event after it, then follows new ones.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import structlog

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Event:
    seq: int
    type: int  # notifier_pb2.EventType value
    job_id: str
    task_id: str
    payload_json: str
    at: datetime


@dataclass(frozen=True)
class AgentInfo:
    node_id: str
    connected: bool
    last_seq: int
    acked_seq: int


@dataclass
class _NodeQueue:
    pending: deque[Event] = field(default_factory=deque)
    last_seq: int = 0
    acked_seq: int = 0
    generation: int = 0  # bumped by every new subscription; older streams end
    streams: int = 0
    delivered_seq: int = 0  # the highest seq any stream of this node has yielded
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def wake(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()


class EventQueues:
    """All nodes' queues. ``on_presence(node_id, online)`` is called on connect/disconnect."""

    def __init__(
        self,
        *,
        max_pending: int = 10_000,
        on_presence: Callable[[str, bool], None] | None = None,
        clock_ms: Callable[[], int] | None = None,
    ) -> None:
        self._nodes: dict[str, _NodeQueue] = {}
        self._max_pending = max_pending
        self._on_presence = on_presence
        self._clock_ms = clock_ms or (lambda: time.time_ns() // 1_000_000)
        self._seq = self._clock_ms()
        self.pushed = 0  # events queued since start
        self.redelivered = 0  # events yielded again (a resubscription replayed them)

    def _node(self, node_id: str) -> _NodeQueue:
        q = self._nodes.get(node_id)
        if q is None:
            q = self._nodes[node_id] = _NodeQueue()
        return q

    def _next_seq(self) -> int:
        self._seq = max(self._seq + 1, self._clock_ms())
        return self._seq

    def push(
        self,
        node_id: str,
        type_: int,
        job_id: str = "",
        task_id: str = "",
        payload_json: str = "",
        at: datetime | None = None,
    ) -> tuple[int, bool]:
        """Queue an event for ``node_id``; return its seq and whether a stream was open."""
        q = self._node(node_id)
        event = Event(
            seq=self._next_seq(),
            type=type_,
            job_id=job_id,
            task_id=task_id,
            payload_json=payload_json,
            at=at or datetime.now(UTC),
        )
        q.pending.append(event)
        self.pushed += 1
        q.last_seq = event.seq
        while len(q.pending) > self._max_pending:
            dropped = q.pending.popleft()
            log.warning(
                "event.dropped",
                node_id=node_id,
                seq=dropped.seq,
                job_id=dropped.job_id,
                task_id=dropped.task_id,
                reason="queue full",
            )
        q.wake()
        return event.seq, q.streams > 0

    def ack(self, node_id: str, seq: int) -> int:
        """Drop every event of ``node_id`` with seq <= ``seq``; return how many were dropped."""
        q = self._node(node_id)
        dropped = 0
        while q.pending and q.pending[0].seq <= seq:
            q.pending.popleft()
            dropped += 1
        q.acked_seq = max(q.acked_seq, min(seq, q.last_seq))
        return dropped

    def pending(self, node_id: str) -> list[Event]:
        q = self._nodes.get(node_id)
        return list(q.pending) if q else []

    def depths(self) -> dict[str, int]:
        """Unacknowledged events per node."""
        return {n: len(q.pending) for n, q in sorted(self._nodes.items())}

    def agents(self) -> list[AgentInfo]:
        return [
            AgentInfo(
                node_id=n, connected=q.streams > 0, last_seq=q.last_seq, acked_seq=q.acked_seq
            )
            for n, q in sorted(self._nodes.items())
        ]

    def connected(self, node_id: str) -> bool:
        q = self._nodes.get(node_id)
        return bool(q and q.streams)

    async def subscribe(self, node_id: str, after_seq: int) -> AsyncIterator[Event]:
        """Yield queued events after ``after_seq`` in order, then new ones as they arrive.

        A newer subscription of the same node ends this one (the agent reconnected)."""
        q = self._node(node_id)
        q.generation += 1
        generation = q.generation
        q.streams += 1
        if q.streams == 1 and self._on_presence:
            self._on_presence(node_id, True)
        q.wake()  # ends an older stream of this node
        cursor = after_seq
        try:
            while True:
                changed = q.changed
                ready = [e for e in q.pending if e.seq > cursor]
                for event in ready:
                    if q.generation != generation:
                        return
                    cursor = event.seq
                    if event.seq <= q.delivered_seq:
                        self.redelivered += 1
                    q.delivered_seq = max(q.delivered_seq, event.seq)
                    yield event
                if q.generation != generation:
                    return
                if not ready:
                    await changed.wait()
        finally:
            q.streams -= 1
            if q.streams == 0 and self._on_presence:
                self._on_presence(node_id, False)
