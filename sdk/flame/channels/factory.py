"""Open every channel of one task from its :class:`TaskConfig`.

All channels of a task on one backend share one transport (grpc: one server and one client per
peer; mqtt: one client). :func:`open_channels` builds them and :class:`ChannelSet` hands them
out by name and closes them (and the shared transports) together.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING

import structlog

from flame.channels.auth import MessageAuth
from flame.channels.channel import Channel
from flame.channels.settings import ChannelSettings
from flame.channels.transport import Transport, TransportContext, make_transport
from flame.config import Backend, TaskConfig
from flame.errors import ConfigError

if TYPE_CHECKING:
    from flame.channels.discovery import Discovery
    from flame.channels.inproc import InprocHub

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


def settings_for(config: TaskConfig, base: ChannelSettings | None = None) -> ChannelSettings:
    """``base`` (default ``ChannelSettings()``, env ``FLAME_CHANNEL_*``), the send timeout
    capped by the job's ``round_timeout`` unless set in the environment: a send that outlives
    the round is of no use to anyone. A caller opening many tasks' channels reads the
    environment once and passes it as ``base``."""
    settings = base or ChannelSettings()
    if "send_timeout" not in settings.model_fields_set:
        bounded = min(settings.send_timeout, config.job.round_timeout)
        settings = settings.model_copy(update={"send_timeout": bounded})
    return settings


async def open_channels(
    config: TaskConfig,
    *,
    hub: InprocHub | None = None,
    backend: Backend | None = None,
    discovery: Discovery | None = None,
    settings: ChannelSettings | None = None,
) -> ChannelSet:
    """Create and open every channel ``config`` lists for this task: one transport per
    backend (chosen by name from :mod:`flame.channels.transport`'s registry), one
    :class:`Channel` per channel over it.

    ``hub`` is needed for inproc channels; ``discovery`` replaces the one the config names
    (grpc only); ``settings`` defaults to :func:`settings_for` the config.
    """
    ctx = TransportContext(
        config=config,
        settings=settings or settings_for(config),
        hub=hub,
        discovery=discovery,
    )
    chosen = {name: backend_of(config, name, backend) for name in config.channels}
    transports: dict[str, Transport] = {}
    channels: dict[str, Channel] = {}
    try:
        for name, membership in config.channels.items():
            kind = chosen[name]
            if kind not in transports:
                transports[kind] = make_transport(kind, ctx)
            auth = None
            if kind != "inproc":  # one process: nothing to authenticate
                auth = MessageAuth.of(
                    config,
                    membership,
                    max_age=ctx.settings.max_message_age,
                    reorder_allowance=ctx.settings.reorder_allowance,
                )
            channels[name] = Channel(
                name,
                config.task_id,
                membership.peers,
                transports[kind],
                job_id=config.job_id,
                auth=auth,
            )
        for chan in channels.values():
            await chan.open()
    except BaseException:
        await ChannelSet(channels, [t.close for t in transports.values()]).close()
        raise
    log.debug("channels.opened", task_id=config.task_id, backends=chosen)
    return ChannelSet(channels, [t.close for t in transports.values()])
