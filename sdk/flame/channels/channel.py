"""What every backend's channel shares: its peers, stamping outgoing messages, the inbox.

A backend subclasses :class:`ChannelBase` and implements ``_transmit`` (and ``open``/``close``
as needed); ``send``, ``broadcast``, ``recv``, ``recv_any`` and ``peers`` come from here, so the
semantics of :class:`flame.channels.base.Channel` are written once.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterable, Sequence

from flame.channels.chunking import check_sendable
from flame.channels.inbox import Inbox
from flame.config import PeerRef
from flame.errors import ChannelError
from flame.messages import Message


class BroadcastError(ChannelError):
    """A broadcast reached only some peers: ``reached`` got it, ``failed`` maps the rest to
    their error (a :class:`PeerTimeout` for a dead or unreachable peer)."""

    def __init__(self, reached: list[str], failed: dict[str, ChannelError]) -> None:
        super().__init__(
            "broadcast failed for " + ", ".join(f"{p} ({e})" for p, e in failed.items())
        )
        self.reached = reached
        self.failed = failed


class ChannelBase:
    """One task's end of one named channel; the transport is left to subclasses."""

    def __init__(
        self,
        name: str,
        me: str,
        peers: Sequence[PeerRef],
        job_id: str = "",
        inbox: Inbox | None = None,
    ) -> None:
        self.name = name
        self.me = me
        self.job_id = job_id
        self._peers: dict[str, PeerRef] = {p.task_id: p for p in peers}
        self._inbox = inbox if inbox is not None else Inbox(name, me)
        self._closed = False

    # -- peers -------------------------------------------------------------------------------
    def peers(self, role: str | None = None) -> list[str]:
        return [p.task_id for p in self._peers.values() if role is None or p.role == role]

    def _check_peer(self, peer: str) -> None:
        if peer not in self._peers:
            raise ChannelError(f"{peer!r} is not a peer of {self.me} on channel {self.name}")

    # -- sending -----------------------------------------------------------------------------
    def _stamp(self, msg: Message) -> Message:
        """The message as it goes on the wire: from me, on this channel, in this job."""
        if msg.sender == self.me and msg.channel == self.name and msg.job_id == self.job_id:
            return msg
        return dataclasses.replace(msg, sender=self.me, channel=self.name, job_id=self.job_id)

    async def _transmit(self, peer: str, msg: Message) -> None:
        raise NotImplementedError

    async def send(self, peer: str, msg: Message) -> None:
        if self._closed:
            raise ChannelError(f"channel {self.name} of {self.me} is closed")
        self._check_peer(peer)
        check_sendable(msg.weights)  # every backend refuses what the wire cannot carry
        await self._transmit(peer, self._stamp(msg))

    async def broadcast(self, msg: Message, peers: Iterable[str] | None = None) -> None:
        """Send ``msg`` to every peer concurrently; one message id, so each peer dedups alike.

        If some sends fail the others still complete; then :class:`BroadcastError` says which
        peers were reached and why the others were not.
        """
        targets = self.peers() if peers is None else list(peers)
        for p in targets:
            self._check_peer(p)
        stamped = self._stamp(msg)
        results = await asyncio.gather(
            *(self.send(p, stamped) for p in targets), return_exceptions=True
        )
        failed: dict[str, ChannelError] = {}
        for peer, r in zip(targets, results, strict=True):
            if isinstance(r, ChannelError):
                failed[peer] = r
            elif isinstance(r, BaseException):
                raise r
        if failed:
            raise BroadcastError([p for p in targets if p not in failed], failed)

    # -- receiving ---------------------------------------------------------------------------
    def _accept(self, msg: Message) -> bool:
        """Queue a message that arrived for me; False if it was a duplicate or not for me."""
        return self._inbox.put(msg)

    async def recv(self, peer: str, timeout: float | None = None) -> Message:
        self._check_peer(peer)
        return await self._inbox.get(peer, timeout)

    async def recv_any(
        self, peers: Sequence[str] | None = None, timeout: float | None = None
    ) -> tuple[str, Message]:
        wanted = self.peers() if peers is None else list(peers)
        for p in wanted:
            self._check_peer(p)
        if not wanted:
            raise ChannelError(f"{self.me} has no peers to receive from on channel {self.name}")
        return await self._inbox.get_any(wanted, timeout)

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        self._closed = True
        self._inbox.close()
