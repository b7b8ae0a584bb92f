"""Open every channel of one task from its :class:`TaskConfig`.

All grpc channels of a task share one gRPC server and one client per peer; all mqtt channels
share one MQTT client. :func:`open_channels` builds them and :class:`ChannelSet` hands them out
by name and closes them (and the shared transports) together.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from types import TracebackType

import structlog

from flame.channels.base import Channel
from flame.channels.inproc import InprocChannel, InprocHub
from flame.config import Backend, TaskConfig
from flame.errors import ChannelError, ConfigError

log = structlog.get_logger(__name__)

Closer = Callable[[], Awaitable[None]]


class ChannelSet:
    """All channels of one task, by name; closing it closes them and their transports."""

    def __init__(self, channels: dict[str, Channel], closers: list[Closer] | None = None) -> None:
        self._channels = channels
        self._closers = closers or []
        self._closed = False

    def __getitem__(self, name: str) -> Channel:
        try:
            return self._channels[name]
        except KeyError:
            raise ConfigError(
                f"no channel {name!r} (this task has: {', '.join(sorted(self._channels))})"
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._channels

    def __iter__(self) -> Iterator[str]:
        return iter(self._channels)

    def __len__(self) -> int:
        return len(self._channels)

    async def close(self) -> None:
        """Close every channel, then the shared transports. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for chan in self._channels.values():
            await chan.close()
        for closer in reversed(self._closers):
            await closer()

    async def __aenter__(self) -> ChannelSet:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


def backend_of(config: TaskConfig, channel: str, override: Backend | None = None) -> Backend:
    """The backend a channel runs on: the explicit override, else the job's, else the design's."""
    if override is not None:
        return override
    if config.job.backend is not None:
        return config.job.backend
    return config.channels[channel].backend


async def open_channels(
    config: TaskConfig,
    *,
    hub: InprocHub | None = None,
    backend: Backend | None = None,
) -> ChannelSet:
    """Create and open every channel ``config`` lists for this task."""
    channels: dict[str, Channel] = {}
    closers: list[Closer] = []
    chosen = {name: backend_of(config, name, backend) for name in config.channels}
    try:
        for name, membership in config.channels.items():
            if chosen[name] == "inproc":
                if hub is None:
                    raise ConfigError(f"channel {name!r} uses the inproc backend but no hub given")
                channels[name] = InprocChannel(
                    name, config.task_id, membership.peers, hub, job_id=config.job_id
                )
            else:
                raise ChannelError(f"channel {name!r}: backend {chosen[name]!r} is not available")
        for chan in channels.values():
            await chan.open()
    except BaseException:
        await ChannelSet(channels, closers).close()
        raise
    log.debug("channels.opened", task_id=config.task_id, backends=chosen)
    return ChannelSet(channels, closers)
