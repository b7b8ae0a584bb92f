"""The transport seam: what a backend implements, and the registry that picks one by name.

A :class:`Transport` moves :class:`~flame.messages.Message` s between the tasks of a job; the
channel logic (peers, checks, inbox, timeouts) is :class:`~flame.channels.channel.Channel`'s.
One transport per backend per task serves all of that task's channels of that backend.

To add a backend: a module with a class implementing :class:`Transport` and a factory
``(TransportContext) -> Transport``, and one :func:`register` call (the built-in ones are
listed in :data:`BUILTIN`, imported only when a job uses them).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from flame.channels.inbox import Inbox
from flame.channels.settings import ChannelSettings
from flame.config import TaskConfig
from flame.errors import ConfigError
from flame.messages import Message

if TYPE_CHECKING:
    from flame.channels.channel import Channel
    from flame.channels.discovery import Discovery
    from flame.channels.inproc import InprocHub


@runtime_checkable
class Transport(Protocol):
    """Moves messages for the channels of one task on one backend."""

    name: str

    def attach(self, channel: Channel) -> Inbox:
        """Route incoming messages of ``channel.name`` for ``channel.me`` to ``channel``;
        returns the inbox the channel reads from."""
        ...

    async def start(self) -> None:
        """Connect / serve; idempotent (every channel of the task calls it)."""
        ...

    async def send(self, channel: str, peer: str, msg: Message) -> None:
        """Deliver ``msg`` to ``peer``'s end of ``channel``; raise ``PeerTimeout`` /
        ``ChannelError`` when it cannot."""
        ...

    async def close(self) -> None:
        """Release sockets and threads; idempotent."""
        ...


@dataclass(frozen=True)
class TransportContext:
    """What a factory may use to build a task's transport."""

    config: TaskConfig
    settings: ChannelSettings
    hub: InprocHub | None = None  # inproc: the simulated job's switchboard
    discovery: Discovery | None = None  # grpc: replaces the one the config names


Factory = Callable[[TransportContext], Transport]

#: Built-in backends: name -> "module:factory", imported on first use (grpc and paho are heavy).
BUILTIN: dict[str, str] = {
    "inproc": "flame.channels.inproc:transport",
    "grpc": "flame.channels.grpc:transport",
    "mqtt": "flame.channels.mqtt:transport",
}
_FACTORIES: dict[str, Factory] = {}


def register(name: str, factory: Factory) -> None:
    """Make backend ``name`` available to designs and job specs."""
    _FACTORIES[name] = factory


def make_transport(name: str, ctx: TransportContext) -> Transport:
    factory = _FACTORIES.get(name)
    if factory is None:
        target = BUILTIN.get(name)
        if target is None:
            known = ", ".join(sorted({*BUILTIN, *_FACTORIES}))
            raise ConfigError(f"unknown channel backend {name!r} (known: {known})")
        module, _, attr = target.partition(":")
        factory = getattr(importlib.import_module(module), attr)
        _FACTORIES[name] = factory
    return factory(ctx)
