"""The receiving side every backend shares: per-sender FIFO queues, duplicate drop, waiting.

A backend's transport calls :meth:`Inbox.put` (always on the event loop's thread) for each
complete message; the channel's ``recv``/``recv_any`` call :meth:`Inbox.get` and
:meth:`Inbox.get_any`. Waiting is event-driven: a ``put`` wakes the waiters, nothing polls.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import OrderedDict, deque
from collections.abc import Sequence

import structlog

from flame.errors import ChannelError, PeerTimeout
from flame.messages import Message

log = structlog.get_logger(__name__)

DEDUP_WINDOW = 65_536  # message ids remembered per inbox to drop redeliveries


class Inbox:
    """Messages addressed to one task on one channel, queued per sender."""

    def __init__(self, channel: str, me: str, *, dedup_window: int = DEDUP_WINDOW) -> None:
        self.channel = channel
        self.me = me
        self._queues: dict[str, deque[tuple[int, Message]]] = {}
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._dedup_window = dedup_window
        self._seq = itertools.count()
        self._waiters: set[asyncio.Future[None]] = set()
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def seen(self, message_id: str) -> bool:
        return message_id in self._seen

    def put(self, msg: Message) -> bool:
        """Queue ``msg``; return False (and drop it) if its ``message_id`` was seen already."""
        if self._closed:
            log.debug("message.dropped", channel=self.channel, me=self.me, reason="closed")
            return False
        if msg.message_id in self._seen:
            log.info(
                "message.duplicate_dropped",
                channel=self.channel,
                me=self.me,
                sender=msg.sender,
                message_id=msg.message_id,
            )
            return False
        self._seen[msg.message_id] = None
        if len(self._seen) > self._dedup_window:
            self._seen.popitem(last=False)
        self._queues.setdefault(msg.sender, deque()).append((next(self._seq), msg))
        self._wake()
        return True

    def _wake(self) -> None:
        for fut in self._waiters:
            if not fut.done():
                fut.set_result(None)
        self._waiters.clear()

    def _pop(self, peers: Sequence[str] | None) -> tuple[str, Message] | None:
        """Oldest queued message among ``peers`` (all senders when None)."""
        best: str | None = None
        best_seq = -1
        for sender in self._queues if peers is None else peers:
            q = self._queues.get(sender)
            if q and (best is None or q[0][0] < best_seq):
                best, best_seq = sender, q[0][0]
        if best is None:
            return None
        return best, self._queues[best].popleft()[1]

    async def get(self, peer: str, timeout: float | None = None) -> Message:
        _, msg = await self.get_any([peer], timeout, what=f"peer {peer}")
        return msg

    async def get_any(
        self, peers: Sequence[str] | None, timeout: float | None = None, *, what: str = ""
    ) -> tuple[str, Message]:
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            got = self._pop(peers)
            if got is not None:
                return got
            if self._closed:
                raise ChannelError(f"channel {self.channel} of {self.me} is closed")
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                raise PeerTimeout(
                    f"{self.me}: no message on channel {self.channel} from "
                    f"{what or ('any of ' + ', '.join(peers) if peers else 'any peer')} "
                    f"within {timeout:g}s"
                )
            fut: asyncio.Future[None] = loop.create_future()
            self._waiters.add(fut)
            try:
                await asyncio.wait_for(fut, remaining)
            except TimeoutError:
                pass
            finally:
                self._waiters.discard(fut)

    def close(self) -> None:
        """Wake every waiter with ChannelError; later puts are dropped. Idempotent."""
        self._closed = True
        self._wake()
