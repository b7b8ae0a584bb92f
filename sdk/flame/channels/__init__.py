"""Data-plane channels: one :class:`Channel` over pluggable transports (inproc, grpc, mqtt)."""

from flame.channels.channel import BroadcastError, Channel
from flame.channels.factory import ChannelSet, open_channels
from flame.channels.inproc import InprocChannel, InprocHub
from flame.channels.transport import Transport, TransportContext, register

__all__ = [
    "BroadcastError",
    "Channel",
    "ChannelSet",
    "InprocChannel",
    "InprocHub",
    "Transport",
    "TransportContext",
    "open_channels",
    "register",
]
