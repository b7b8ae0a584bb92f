"""Start the notifier: queues, presence reporter, gRPC server (health + reflection)."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

import grpc
import structlog
from grpc_health.v1 import health

from flame_notifier.controller import ControllerClient
from flame_notifier.observability import notifier_registry
from flame_notifier.presence import PresenceReporter
from flame_notifier.queues import EventQueues
from flame_notifier.servicer import NotifierServicer
from flame_notifier.settings import NotifierSettings
from flame_proto.v1 import notifier_pb2_grpc
from flame_service.grpc_server import start_health_server, start_server
from flame_service.logship import LogShipper
from flame_service.metrics_endpoint import MetricsServer, start_metrics_server

log = structlog.get_logger(__name__)


@dataclass
class Running:
    port: int
    queues: EventQueues
    presence: PresenceReporter
    _server: grpc.aio.Server
    _controller: ControllerClient
    health_port: int | None = None  # the plaintext health-only port, if any
    _health_server: grpc.aio.Server | None = None
    _shipping: asyncio.Task[None] | None = None
    metrics: MetricsServer | None = None  # the /metrics port, if on

    @property
    def metrics_port(self) -> int | None:
        return self.metrics.port if self.metrics else None

    async def stop(self, grace: float = 1.0) -> None:
        await self._server.stop(grace)
        if self._shipping is not None:
            self._shipping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._shipping
        if self._health_server is not None:
            await self._health_server.stop(0)
        if self.metrics is not None:
            await self.metrics.stop()
        await self.presence.stop()
        await self._controller.close()
        log.info("notifier.stopped", port=self.port)

    async def wait(self) -> None:
        await self._server.wait_for_termination()


async def serve(
    settings: NotifierSettings | None = None, shipper: LogShipper | None = None
) -> Running:
    """``shipper`` (the one logging was configured with) sends the notifier's events about
    jobs to the controller's log store."""
    settings = settings or NotifierSettings()
    security = settings.security()
    service_token = settings.service_token()
    if not service_token:
        raise ValueError(
            "the notifier needs the service credential it shares with the controller: "
            "set FLAME_SERVICE_TOKEN_FILE"
        )
    controller = ControllerClient(
        settings.controller_address, security, settings.controller_timeout, service_token
    )
    presence = PresenceReporter(controller.report_presence, retry_max=settings.presence_retry_max)
    queues = EventQueues(max_pending=settings.max_pending_per_node, on_presence=presence.set)
    servicer = NotifierServicer(queues, controller.authenticate, service_token)
    health_servicer = health.aio.HealthServicer()
    server, port = await start_server(
        settings.listen,
        [(notifier_pb2_grpc.add_NotifierServicer_to_server, servicer, "flame.v1.Notifier")],
        security,
        health_servicer=health_servicer,
        client_certs=False,  # flamelets hold tokens, not certificates
    )
    health_server, health_port = None, None
    if settings.health_listen:
        try:
            health_server, health_port = await start_health_server(
                settings.health_listen, health_servicer
            )
        except BaseException:
            await server.stop(0)
            await controller.close()
            raise
    try:
        metrics = await start_metrics_server(settings, notifier_registry(queues))
    except BaseException:
        await server.stop(0)
        if health_server is not None:
            await health_server.stop(0)
        await controller.close()
        raise
    presence.start()
    shipping = None
    if shipper is not None:
        shipping = asyncio.create_task(shipper.run(controller.ship_logs_to()))
    log.info(
        "notifier.started",
        port=port,
        health_port=health_port,
        metrics_port=metrics.port if metrics else None,
        controller=settings.controller_address,
    )
    return Running(
        port=port,
        queues=queues,
        presence=presence,
        _server=server,
        _controller=controller,
        health_port=health_port,
        _health_server=health_server,
        _shipping=shipping,
        metrics=metrics,
    )
