"""In-process backend: every task of a simulated job runs on one event loop and shares a hub.

Messages do not go through bytes, but each receiver gets its own copy of the tensors, so a
task that trains in place never changes what another task received (as with a real wire).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from flame.channels.inbox import Inbox
from flame.config import PeerRef
from flame.errors import ChannelError, ConfigError
from flame.messages import Message
from flame.tensors import copy_weights

if TYPE_CHECKING:
    from flame.channels.channel import Channel
    from flame.channels.transport import TransportContext


class InprocHub:
    """The shared switchboard of one simulated job: one inbox per (channel, receiver task).

    Inboxes are created on first use by either end, so a message sent before its receiver
    opened the channel waits for it. Once the receiver closes, sends to it fail.
    """

    def __init__(self, job_id: str = "") -> None:
        self.job_id = job_id
        self._inboxes: dict[tuple[str, str], Inbox] = {}

    def inbox(self, channel: str, task_id: str) -> Inbox:
        box = self._inboxes.get((channel, task_id))
        if box is None:
            box = self._inboxes[(channel, task_id)] = self.new_inbox(channel, task_id)
        return box

    def open_inbox(self, channel: str, task_id: str) -> Inbox:
        """The inbox for a (re)opened channel end: a closed one is replaced by a fresh one."""
        box = self.inbox(channel, task_id)
        if box.closed:
            box = self._inboxes[(channel, task_id)] = self.new_inbox(channel, task_id)
        return box

    def new_inbox(self, channel: str, task_id: str) -> Inbox:
        return Inbox(channel, task_id)

    def deliver(self, receiver: str, msg: Message) -> None:
        box = self.inbox(msg.channel, receiver)
        if box.closed:
            raise ChannelError(
                f"{msg.sender} -> {receiver} on channel {msg.channel}: receiver has closed"
            )
        if box.seen(msg.message_id):
            box.put(msg)  # logs and drops the duplicate without copying tensors
            return
        if msg.weights is not None:
            msg = msg.evolve(weights=copy_weights(msg.weights))
        box.put(msg)


class InprocTransport:
    """A task's end of the hub: sends are deliveries into the receiver's inbox."""

    name = "inproc"
    sends_wait = False  # a send is a delivery into the receiver's inbox: it never waits

    def __init__(self, hub: InprocHub) -> None:
        self.hub = hub

    def attach(self, channel: Channel) -> Inbox:
        return self.hub.open_inbox(channel.name, channel.me)

    async def start(self) -> None:
        return None

    async def send(self, channel: str, peer: str, msg: Message) -> None:
        self.hub.deliver(peer, msg)

    async def close(self) -> None:
        return None


def transport(ctx: TransportContext) -> InprocTransport:
    if ctx.hub is None:
        raise ConfigError("the inproc backend needs a hub (only flame.simulate runs it)")
    return InprocTransport(ctx.hub)


def InprocChannel(
    name: str, me: str, peers: Sequence[PeerRef], hub: InprocHub, job_id: str | None = None
) -> Channel:
    """A channel end whose peers live in the same process, connected through ``hub``."""
    from flame.channels.channel import Channel

    return Channel(name, me, peers, InprocTransport(hub), hub.job_id if job_id is None else job_id)
