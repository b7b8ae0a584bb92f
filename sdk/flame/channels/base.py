"""The channel interface every backend (inproc, grpc, mqtt) implements.

A :class:`Channel` is one task's end of one named channel of the design. It knows its peers
(from the task config: ``TaskConfig.channels[name].peers``) and moves :class:`Message` objects
to and from them. Everything is asyncio and event-driven: no polling timers.

Semantics every backend must honour (checked by ``tests/contract/test_channels.py``):

* ``send(peer, msg)`` returns once the message is handed to the transport (gRPC: the receiver
  acknowledged it). Messages from one sender to one receiver arrive in order, exactly once
  (duplicates from redelivery are dropped by ``message_id``).
* ``recv(peer, timeout)`` returns the next message from that peer, or raises ``PeerTimeout``.
* ``recv_any(peers, timeout)`` returns ``(peer, message)`` for whichever message arrives first.
* ``broadcast(msg, peers)`` sends to every peer (default: all peers) concurrently.
* ``close()`` releases sockets and tasks; it is idempotent.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol, runtime_checkable

from flame.messages import Message


@runtime_checkable
class Channel(Protocol):
    name: str
    me: str  # this task's id

    def peers(self, role: str | None = None) -> list[str]: ...

    async def open(self) -> None: ...

    async def send(self, peer: str, msg: Message) -> None: ...

    async def broadcast(self, msg: Message, peers: Iterable[str] | None = None) -> None: ...

    async def recv(self, peer: str, timeout: float | None = None) -> Message: ...

    async def recv_any(
        self, peers: Sequence[str] | None = None, timeout: float | None = None
    ) -> tuple[str, Message]: ...

    async def close(self) -> None: ...
