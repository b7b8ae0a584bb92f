"""The receiving side every backend shares: per-sender FIFO queues, duplicate drop, waiting.

A backend's transport calls :meth:`Inbox.put` (always on the event loop's thread) for each
complete message; the channel's ``recv``/``recv_any`` call :meth:`Inbox.get` and
:meth:`Inbox.get_any`. Waiting is event-driven: a ``put`` wakes the waiters, nothing polls.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections import OrderedDict, deque
from collections.abc import Callable, Collection

import structlog

from flame.errors import ChannelError, PeerTimeout
from flame.messages import Message

log = structlog.get_logger(__name__)

DEDUP_WINDOW = 65_536  # message ids remembered per inbox to drop redeliveries


class Inbox:
    """Messages addressed to one task on one channel, queued per sender.

    A heap of ``(sequence number, sender)`` holds each non-empty queue's oldest message, so
    taking the oldest message among many senders costs O(log n) however many senders are
    waited for (a round's collect over 10,000 trainers stays linear). An entry goes stale when
    its message is taken by a receive from that sender alone; stale entries are dropped when
    they surface, and the heap is rebuilt when they outnumber the live ones.
    """

    def __init__(
        self,
        channel: str,
        me: str,
        *,
        dedup_window: int = DEDUP_WINDOW,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self.channel = channel
        self.me = me
        self._on_close = on_close  # told once, when the inbox closes
        self._queues: dict[str, deque[tuple[int, Message]]] = {}
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._dedup_window = dedup_window
        self._seq = itertools.count()
        self._heads: list[tuple[int, str]] = []  # (seq, sender): heap of the queues' heads
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
        seq = next(self._seq)
        queue = self._queues.setdefault(msg.sender, deque())
        queue.append((seq, msg))
        if len(queue) == 1:
            heapq.heappush(self._heads, (seq, msg.sender))
        self._wake()
        return True

    def _wake(self) -> None:
        for fut in self._waiters:
            if not fut.done():
                fut.set_result(None)
        self._waiters.clear()

    def _pop(self, peers: Collection[str] | None) -> tuple[str, Message] | None:
        """Oldest queued message among ``peers`` (all senders when None)."""
        if peers is not None and len(peers) <= 4:  # a receive from one peer: look at its queue
            best: str | None = None
            best_seq = -1
            for sender in peers:
                q = self._queues.get(sender)
                if q and (best is None or q[0][0] < best_seq):
                    best, best_seq = sender, q[0][0]
            return None if best is None else self._take(best)
        skipped: list[tuple[int, str]] = []
        found: str | None = None
        while self._heads:
            seq, sender = self._heads[0]
            q = self._queues.get(sender)
            if not q or q[0][0] != seq:  # stale: that message was taken by sender
                heapq.heappop(self._heads)
            elif peers is None or sender in peers:
                found = sender
                break
            else:
                skipped.append(heapq.heappop(self._heads))
        for entry in skipped:
            heapq.heappush(self._heads, entry)
        return None if found is None else self._take(found)

    def _take(self, sender: str) -> tuple[str, Message]:
        """Pop ``sender``'s oldest message; its next one (if any) becomes a heap entry."""
        q = self._queues[sender]
        seq, msg = q.popleft()
        if self._heads and self._heads[0] == (seq, sender):
            heapq.heappop(self._heads)
        if q:
            heapq.heappush(self._heads, (q[0][0], sender))
        else:
            del self._queues[sender]
        if len(self._heads) > 2 * len(self._queues) + 64:  # mostly stale: rebuild
            self._heads = [(q[0][0], s) for s, q in self._queues.items()]
            heapq.heapify(self._heads)
        return sender, msg

    async def get(self, peer: str, timeout: float | None = None) -> Message:
        _, msg = await self.get_any((peer,), timeout, one=True)
        return msg

    async def get_any(
        self, peers: Collection[str] | None, timeout: float | None = None, *, one: bool = False
    ) -> tuple[str, Message]:
        """The oldest message among ``peers`` (every sender when None), waiting up to
        ``timeout`` seconds for one (``one``: a receive from the one peer in ``peers``)."""
        got = self._pop(peers)
        if got is not None:  # the common case in a round: no future, no timer
            return got
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            if self._closed:
                raise ChannelError(f"channel {self.channel} of {self.me} is closed")
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                what = f"peer {next(iter(peers or ()), '')}" if one else _which(peers)
                raise PeerTimeout(
                    f"{self.me}: no message on channel {self.channel} from "
                    f"{what} within {timeout:g}s"
                )
            fut: asyncio.Future[None] = loop.create_future()
            self._waiters.add(fut)
            # a put or the timer wakes the waiter (no wait_for: it costs a task's worth of
            # callbacks per receive)
            timer = None if remaining is None else loop.call_later(remaining, _wake_one, fut)
            try:
                await fut
            finally:
                self._waiters.discard(fut)
                if timer is not None:
                    timer.cancel()
            got = self._pop(peers)
            if got is not None:
                return got

    def close(self) -> None:
        """Wake every waiter with ChannelError; later puts are dropped. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._wake()
        if self._on_close is not None:
            self._on_close()


def _wake_one(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def _which(peers: Collection[str] | None) -> str:
    if not peers:
        return "any peer"
    named = sorted(peers)
    more = f" and {len(named) - 10} more" if len(named) > 10 else ""
    return "any of " + ", ".join(named[:10]) + more
