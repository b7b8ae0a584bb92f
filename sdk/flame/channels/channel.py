"""A channel: one task's end of one named channel of the design, over a :class:`Transport`.

The channel logic is written once, here (STYLE §9, httpx's client over its transports): peers,
stamping outgoing messages, refusing what the wire cannot carry, concurrent broadcast, the
receiving checks (job, receiver, sender, duplicates), the inbox, ``recv`` / ``recv_any`` with
timeouts. A transport (:mod:`flame.channels.transport`) only moves messages between tasks.

Semantics every backend honours (``tests/contract/test_channels.py`` runs them over all three):

* ``send(peer, msg)`` returns once the transport delivered the message (gRPC: the receiver
  acknowledged it; MQTT: the broker did). Messages from one sender to one receiver arrive in
  order, exactly once (duplicates from redelivery are dropped by ``message_id``).
* ``recv(peer, timeout)`` returns the next message from that peer, or raises ``PeerTimeout``.
* ``recv_any(peers, timeout)`` returns ``(peer, message)`` for whichever arrives first.
* ``broadcast(msg, peers)`` sends to every peer (default: all peers) concurrently.
* ``close()`` releases the channel; it is idempotent. Everything is asyncio and event-driven.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Iterable, Sequence
from typing import TYPE_CHECKING

import structlog

from flame.channels.auth import MessageAuth, payload_digest
from flame.channels.chunking import check_sendable
from flame.channels.inbox import Inbox
from flame.config import PeerRef
from flame.errors import ChannelError
from flame.messages import Message

if TYPE_CHECKING:
    from flame.channels.transport import Transport

log = structlog.get_logger(__name__)

# the digest passed for a payload that was checked but need not be digested (no keys)
_CHECKED: tuple[int, bytes] = (-1, b"")


class BroadcastError(ChannelError):
    """A broadcast reached only some peers: ``reached`` got it, ``failed`` maps the rest to
    their error (a :class:`PeerTimeout` for a dead or unreachable peer)."""

    def __init__(self, reached: list[str], failed: dict[str, ChannelError]) -> None:
        super().__init__(
            "broadcast failed for " + ", ".join(f"{p} ({e})" for p, e in failed.items())
        )
        self.reached = reached
        self.failed = failed


class Channel:
    """One task's end of one named channel; ``transport`` moves its messages."""

    def __init__(
        self,
        name: str,
        me: str,
        peers: Sequence[PeerRef],
        transport: Transport,
        job_id: str = "",
        auth: MessageAuth | None = None,
    ) -> None:
        self.name = name
        self.me = me
        self.job_id = job_id
        self.transport = transport
        self.auth = auth
        self._peers: dict[str, PeerRef] = {p.task_id: p for p in peers}
        self._inbox: Inbox = transport.attach(self)
        # False when every send of the transport completes without waiting (inproc)
        self._sends_wait: bool = getattr(transport, "sends_wait", True)
        self._closed = False

    # -- peers -------------------------------------------------------------------------------
    def peers(self, role: str | None = None) -> list[str]:
        return [p.task_id for p in self._peers.values() if role is None or p.role == role]

    def is_peer(self, task_id: str) -> bool:
        return task_id in self._peers

    def _check_peer(self, peer: str) -> None:
        if peer not in self._peers:
            raise ChannelError(f"{peer!r} is not a peer of {self.me} on channel {self.name}")

    @property
    def closed(self) -> bool:
        return self._closed

    # -- sending -----------------------------------------------------------------------------
    def stamp(self, msg: Message) -> Message:
        """The message as it goes on the wire: from me, on this channel, in this job (stamp a
        message sent to many peers once: sending a stamped message copies nothing)."""
        if msg.sender == self.me and msg.channel == self.name and msg.job_id == self.job_id:
            return msg
        return msg.evolve(sender=self.me, channel=self.name, job_id=self.job_id)

    async def send(self, peer: str, msg: Message) -> None:
        await self._send(peer, self.stamp(msg), None)

    async def _send(self, peer: str, msg: Message, digest: tuple[int, bytes] | None) -> None:
        """Send a stamped message; ``digest``: its payload's, when it was checked (and, with
        keys, digested) already for every peer it goes to."""
        if self._closed:
            raise ChannelError(f"channel {self.name} of {self.me} is closed")
        self._check_peer(peer)
        # every backend refuses what the wire cannot carry (the payload's digest does too)
        if self.auth is not None:
            msg = self.auth.seal(msg, peer, digest or payload_digest(msg.weights))
        elif digest is None:
            check_sendable(msg.weights)
        await self.transport.send(self.name, peer, msg)

    async def send_each(self, peers: Sequence[str], msg: Message) -> list[Exception | None]:
        """Send ``msg`` (one message id, so each peer dedups alike) to every one of ``peers``
        concurrently; per peer, None once it was delivered, else the exception its send
        raised. The message is stamped, checked and (with keys) its payload digested once for
        all of them. Over a transport whose sends never wait (inproc) they run one after the
        other, which is the same without a task per send."""
        stamped = self.stamp(msg)
        digest: tuple[int, bytes] | None = None
        refused: ChannelError | None = None
        if peers:
            try:
                if self.auth is None:
                    check_sendable(stamped.weights)
                    digest = _CHECKED
                else:
                    digest = payload_digest(stamped.weights)
            except ChannelError as exc:
                refused = exc

        async def one(peer: str) -> None:
            if refused is not None:
                if self._closed:
                    raise ChannelError(f"channel {self.name} of {self.me} is closed")
                self._check_peer(peer)
                raise refused
            await self._send(peer, stamped, digest)

        if not self._sends_wait:
            results: list[Exception | None] = []
            for p in peers:
                try:
                    await one(p)
                except Exception as exc:
                    results.append(exc)
                else:
                    results.append(None)
            # a send yields to the other tasks once, as one over the network does
            await asyncio.sleep(0)
            return results
        gathered = await asyncio.gather(*(one(p) for p in peers), return_exceptions=True)
        out: list[Exception | None] = []
        for r in gathered:
            if isinstance(r, BaseException) and not isinstance(r, Exception):
                raise r  # cancelled
            out.append(r)
        return out

    async def broadcast(self, msg: Message, peers: Iterable[str] | None = None) -> None:
        """Send ``msg`` to every peer concurrently; one message id, so each peer dedups alike.

        If some sends fail the others still complete; then :class:`BroadcastError` says which
        peers were reached and why the others were not.
        """
        targets = self.peers() if peers is None else list(peers)
        for p in targets:
            self._check_peer(p)
        stamped = self.stamp(msg)
        check_sendable(stamped.weights)
        results = await self.send_each(targets, stamped)
        failed: dict[str, ChannelError] = {}
        for peer, r in zip(targets, results, strict=True):
            if isinstance(r, ChannelError):
                failed[peer] = r
            elif r is not None:
                raise r
        if failed:
            raise BroadcastError([p for p in targets if p not in failed], failed)

    # -- receiving (called by the transport, on the event loop) -------------------------------
    def seen(self, message_id: str) -> bool:
        return self._inbox.seen(message_id)

    def admit(self, sender: str, receiver: str, job_id: str, message_id: str) -> bool:
        """May a message with this header be delivered? False: it is a duplicate (already
        here; acknowledge it without reading it again). :class:`ChannelError`: it is refused."""
        if receiver != self.me:
            raise ChannelError(f"addressed to {receiver!r}, not {self.me!r}")
        if self.job_id and job_id != self.job_id:
            raise ChannelError(f"message of job {job_id!r}, not this job")
        if not self.is_peer(sender):
            raise ChannelError(f"{sender!r} is not a peer of {self.me!r} on {self.name!r}")
        if self.seen(message_id):
            log.info(
                "message.duplicate_dropped",
                channel=self.name,
                me=self.me,
                sender=sender,
                message_id=message_id,
            )
            return False
        return True

    def deliver(self, msg: Message, digest: tuple[int, bytes] | None = None) -> bool:
        """Queue a complete message for ``recv``; False if it was dropped (duplicate, closed).
        With keys, :class:`ChannelError` says why it is refused (see :mod:`.auth`); ``digest``
        is the received payload's (size, SHA-256), computed here when not given."""
        if self.auth is not None:
            self.auth.check(msg, digest or payload_digest(msg.weights))
        return self._inbox.put(msg)

    async def recv(self, peer: str, timeout: float | None = None) -> Message:
        self._check_peer(peer)
        return await self._inbox.get(peer, timeout)

    async def recv_any(
        self,
        peers: Collection[str] | None = None,
        timeout: float | None = None,
        *,
        checked: bool = False,
    ) -> tuple[str, Message]:
        """The first message from any of ``peers`` (every peer when None). ``checked``: the
        caller knows they are all peers of this channel (e.g. a broadcast reached them), so
        they are not checked again: a receive then costs O(log n) however many it waits for,
        and a loop that takes n answers stays linear in n."""
        wanted: Collection[str] = self._peers.keys() if peers is None else peers
        if not checked:
            for p in wanted:
                self._check_peer(p)
        if not wanted:
            raise ChannelError(f"{self.me} has no peers to receive from on channel {self.name}")
        return await self._inbox.get_any(wanted, timeout)

    async def open(self) -> None:
        await self.transport.start()

    async def close(self) -> None:
        self._closed = True
        self._inbox.close()
