"""Open every channel of one task from its :class:`TaskConfig`.

All grpc channels of a task share one gRPC server and one client per peer; all mqtt channels
share one MQTT client. :func:`open_channels` builds them and :class:`ChannelSet` hands them out
by name and closes them (and the shared transports) together.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING

import structlog

from flame.channels.base import Channel
from flame.channels.discovery import Discovery, StaticDiscovery, discovery_from
from flame.channels.inproc import InprocChannel, InprocHub
from flame.channels.settings import ChannelSettings
from flame.config import Backend, TaskConfig
from flame.errors import ConfigError

if TYPE_CHECKING:
    from flame.channels.grpc import GrpcTransport
    from flame.channels.mqtt import MqttTransport

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


def _grpc_transport(
    config: TaskConfig, discovery: Discovery | None, settings: ChannelSettings
) -> GrpcTransport:
    from flame.channels.grpc import GrpcTransport  # grpc is only imported when used

    d = config.discovery
    bind_port = 0
    owned = discovery is None
    if discovery is None:
        discovery = discovery_from(d, config.task_id)
        if isinstance(discovery, StaticDiscovery):
            bind_port = discovery.bind_port(config.task_id)
    return GrpcTransport(
        config.task_id,
        discovery,
        bind_host=d.bind_host,
        bind_port=bind_port,
        advertise_host=d.advertise_host,
        settings=settings,
        owns_discovery=owned,
    )


async def open_channels(
    config: TaskConfig,
    *,
    hub: InprocHub | None = None,
    backend: Backend | None = None,
    discovery: Discovery | None = None,
    settings: ChannelSettings | None = None,
) -> ChannelSet:
    """Create and open every channel ``config`` lists for this task.

    ``hub`` is needed for inproc channels; ``discovery`` replaces the one the config names
    (grpc only); ``settings`` defaults to ``ChannelSettings()`` (env ``FLAME_CHANNEL_*``), with
    the send timeout capped by the job's ``round_timeout`` unless set in the environment.
    """
    from flame.channels.grpc import GrpcChannel
    from flame.channels.mqtt import MqttChannel, MqttTransport

    if settings is None:
        settings = ChannelSettings()
        if "send_timeout" not in settings.model_fields_set:
            # a send that outlives the round is of no use to anyone: fail it with the round
            bounded = min(settings.send_timeout, config.job.round_timeout)
            settings = settings.model_copy(update={"send_timeout": bounded})
    channels: dict[str, Channel] = {}
    closers: list[Closer] = []
    chosen = {name: backend_of(config, name, backend) for name in config.channels}
    grpc_transport: GrpcTransport | None = None
    mqtt_transport: MqttTransport | None = None
    me, job = config.task_id, config.job_id
    try:
        for name, membership in config.channels.items():
            peers = membership.peers
            if chosen[name] == "inproc":
                if hub is None:
                    raise ConfigError(f"channel {name!r} uses the inproc backend but no hub given")
                channels[name] = InprocChannel(name, me, peers, hub, job_id=job)
            elif chosen[name] == "grpc":
                if grpc_transport is None:
                    grpc_transport = _grpc_transport(config, discovery, settings)
                    closers.append(grpc_transport.close)
                channels[name] = GrpcChannel(name, me, peers, grpc_transport, job_id=job)
            else:
                if mqtt_transport is None:
                    mqtt_transport = MqttTransport(config.mqtt, job, me, settings=settings)
                    closers.append(mqtt_transport.close)
                channels[name] = MqttChannel(name, me, peers, mqtt_transport, job_id=job)
        for chan in channels.values():
            await chan.open()
    except BaseException:
        await ChannelSet(channels, closers).close()
        raise
    log.debug("channels.opened", task_id=config.task_id, backends=chosen)
    return ChannelSet(channels, closers)
