"""Start the controller: store, bootstrap admin, gRPC server, background workers."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import grpc
import structlog
from grpc_health.v1 import health

from flame_proto.v1 import control_pb2_grpc
from flame_service.files import write_private
from flame_service.grpc_server import (
    NOT_SERVING,
    SERVING,
    start_health_server,
    start_server,
)
from flame_service.logship import LogShipper
from flame_service.metrics_endpoint import MetricsServer, start_metrics_server

from .bootstrap import bootstrap_admin
from .domain import service_logs
from .domain.context import Ctx
from .observability import ControllerMetrics
from .servicer import ControlPlaneServicer
from .settings import ControllerSettings
from .store import open_store
from .store.base import LogRetention, Store
from .tracking_accounts import TrackingAccounts

if TYPE_CHECKING:
    from .leadership import LeaderGate

log = structlog.get_logger(__name__)
SERVICE_NAME = "flame.v1.ControlPlane"


class Worker(Protocol):
    """A background loop the controller runs next to the gRPC server (the reconciler)."""

    async def run(self) -> None: ...
    async def stop(self) -> None: ...


WorkerFactory = Callable[[Ctx, ControllerSettings], Worker]


class Kicker:
    """Fan-out of "job X changed" to the workers that want to hear it (the reconciler)."""

    def __init__(self) -> None:
        self.listeners: list[Callable[[str], None]] = []

    def __call__(self, job_id: str) -> None:
        for listener in self.listeners:
            listener(job_id)


@dataclass
class RunningController:
    port: int
    store: Store
    ctx: Ctx
    server: grpc.aio.Server
    settings: ControllerSettings
    admin_token: str | None = None  # set when bootstrap generated one
    workers: list[Worker] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    health: health.aio.HealthServicer | None = None
    health_server: grpc.aio.Server | None = None  # the plaintext health-only port, if any
    health_port: int | None = None
    metrics: MetricsServer | None = None  # the /metrics port, if on

    @property
    def metrics_port(self) -> int | None:
        return self.metrics.port if self.metrics else None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def stop(self, grace: float = 2.0) -> None:
        for worker in self.workers:
            with contextlib.suppress(Exception):
                await worker.stop()
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.server.stop(grace)
        if self.health_server is not None:
            await self.health_server.stop(0)
        if self.metrics is not None:
            await self.metrics.stop()
        await self.store.close()
        if self.ctx.tracking_accounts is not None:
            await self.ctx.tracking_accounts.close()
        log.info("controller.stopped")


def default_workers(settings: ControllerSettings) -> list[WorkerFactory]:
    """The reconciler (with the local deployer) unless ``run_reconciler`` is off."""
    if not settings.run_reconciler:
        return []
    from .workers import reconciler_factory

    return [reconciler_factory]


def _leader_gate(
    settings: ControllerSettings,
    ctx: Ctx,
    factories: Sequence[WorkerFactory],
    health_servicer: health.aio.HealthServicer,
) -> LeaderGate | None:
    """With leader election: the workers run only while this replica leads, and its
    ControlPlane health says whether it does (the readiness probe asks for it)."""
    if not (settings.leader_election and factories):
        return None
    from .leadership import gate_for  # imports the kubernetes client

    async def leading(now: bool) -> None:
        await health_servicer.set(SERVICE_NAME, SERVING if now else NOT_SERVING)
        log.info("controller.leading" if now else "controller.standby")

    return gate_for(settings, lambda: [f(ctx, settings) for f in factories], leading)


async def serve(
    settings: ControllerSettings,
    *,
    workers: Sequence[WorkerFactory] | None = None,
    store: Store | None = None,
    shipper: LogShipper | None = None,
) -> RunningController:
    """Open the store, bootstrap the admin, start the gRPC server and the workers.

    ``workers`` defaults to :func:`default_workers`; pass ``[]`` to run the API only.
    ``shipper`` (the one :func:`flame_service.logging.configure_logging` was given) gets a task
    that writes the controller's events about jobs into their logs."""
    service_token = settings.service_token()
    if not service_token:
        raise ValueError(
            "the controller needs the service credential the apiserver and the notifier share: "
            "set FLAME_SERVICE_TOKEN_FILE (flamectl up and the Helm chart make one)"
        )
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if store is None:
        blob_dir = None if settings.store_uri.startswith("sqlite:") else str(settings.blob_dir)
        retention = LogRetention(per_job=settings.log_keep_per_job, total=settings.log_keep_total)
        store = await open_store(settings.store_uri, blob_dir, log_retention=retention)
    try:
        generated = await bootstrap_admin(store, settings.bootstrap_token())
        if generated is not None:
            path = settings.data_dir / "admin.token"
            write_private(path, generated + "\n")
            print(f"flame-controller: the admin's token is in {path} (yours to read only)")
        kicker = Kicker()
        ctx = _context(settings, store, kicker)
        factories = list(default_workers(settings) if workers is None else workers)
        health_servicer = health.aio.HealthServicer()
        gate = _leader_gate(settings, ctx, factories, health_servicer)
        elected = gate is not None
        server, port, health_server, health_port = await _start_servers(
            settings, ControlPlaneServicer(ctx, service_token), health_servicer, elected=elected
        )
        try:
            observed = ControllerMetrics(store)
            metrics = await start_metrics_server(settings, observed.registry, observed.refresh)
        except BaseException:
            await server.stop(0)
            if health_server is not None:
                await health_server.stop(0)
            raise
    except BaseException:
        await store.close()
        raise
    running = RunningController(
        port=port,
        store=store,
        ctx=ctx,
        server=server,
        settings=settings,
        admin_token=generated,
        health=health_servicer,
        health_server=health_server,
        health_port=health_port,
        metrics=metrics,
    )
    if shipper is not None and settings.ship_service_logs:
        sink = functools.partial(service_logs.append_service_logs, ctx, "controller")
        running.tasks.append(asyncio.create_task(shipper.run(sink)))
    _start_workers(running, kicker, gate, factories)
    log.info(
        "controller.started",
        port=port,
        health_port=health_port,
        metrics_port=running.metrics_port,
        leader_election=gate is not None,
        store=settings.store_uri.split("?")[0],
    )
    return running


def _context(settings: ControllerSettings, store: Store, kicker: Kicker) -> Ctx:
    """What every domain call works with: the store, the platform's addresses and secrets."""
    secret = settings.data_plane_secret()
    admin = settings.tracking_admin()
    accounts = (
        TrackingAccounts(settings.tracking_uri, admin, secret)
        if admin and settings.tracking_uri
        else None
    )
    return Ctx(
        store=store,
        apiserver_url=settings.apiserver_url or None,
        tracking_uri=settings.tracking_uri or None,
        kick=kicker,
        data_plane_secret=secret,
        data_plane_tls=settings.data_plane_tls,
        tracking_accounts=accounts,
        tracking_uris=frozenset(
            u for u in (settings.tracking_uri, *settings.tracking_allowed_uris) if u
        ),
        trusted_ca=settings.security().ca,
        node_health_keep=settings.node_health_keep,
    )


def _start_workers(
    running: RunningController,
    kicker: Kicker,
    gate: LeaderGate | None,
    factories: Sequence[WorkerFactory],
) -> None:
    """The background workers; with leader election, only the gate, which starts them when this
    replica leads."""
    if gate is not None:
        kicker.listeners.append(gate.kick)
        running.workers.append(gate)
        running.tasks.append(asyncio.create_task(gate.run()))
        return
    for factory in factories:
        worker = factory(running.ctx, running.settings)
        kick = getattr(worker, "kick", None)
        if callable(kick):
            kicker.listeners.append(kick)
        running.workers.append(worker)
        running.tasks.append(asyncio.create_task(worker.run()))


async def _start_servers(
    settings: ControllerSettings,
    servicer: ControlPlaneServicer,
    health_servicer: health.aio.HealthServicer,
    *,
    elected: bool,
) -> tuple[grpc.aio.Server, int, grpc.aio.Server | None, int | None]:
    """The API's gRPC server (not serving until this replica leads, with leader election) and,
    when configured, the plaintext health port for the kubelet's probes."""
    server, port = await start_server(
        settings.listen,
        [(control_pb2_grpc.add_ControlPlaneServicer_to_server, servicer, SERVICE_NAME)],
        settings.security(),
        health_servicer=health_servicer,
        not_serving=[SERVICE_NAME] if elected else [],
    )
    if not settings.health_listen:
        return server, port, None, None
    try:
        health_server, health_port = await start_health_server(
            settings.health_listen, health_servicer
        )
    except BaseException:
        await server.stop(0)
        raise
    return server, port, health_server, health_port
