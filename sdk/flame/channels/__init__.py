"""Data-plane channels: one :class:`Channel` interface, inproc / grpc / mqtt backends."""

from flame.channels.base import Channel
from flame.channels.common import BroadcastError
from flame.channels.factory import ChannelSet, open_channels
from flame.channels.inproc import InprocChannel, InprocHub

__all__ = ["BroadcastError", "Channel", "ChannelSet", "InprocChannel", "InprocHub", "open_channels"]
