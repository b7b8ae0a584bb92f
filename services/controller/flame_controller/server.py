"""Start the controller: store, bootstrap admin, gRPC server, background workers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import grpc
import structlog

from flame_proto.v1 import control_pb2_grpc
from flame_service.files import write_private
from flame_service.grpc_server import start_server

from .bootstrap import bootstrap_admin
from .domain.context import Ctx
from .servicer import ControlPlaneServicer
from .settings import ControllerSettings
from .store import open_store
from .store.base import Store

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
        await self.store.close()
        log.info("controller.stopped")


def default_workers(settings: ControllerSettings) -> list[WorkerFactory]:
    """The reconciler (with the local deployer) unless ``run_reconciler`` is off."""
    if not settings.run_reconciler:
        return []
    from .workers import reconciler_factory

    return [reconciler_factory]


async def serve(
    settings: ControllerSettings,
    *,
    workers: Sequence[WorkerFactory] | None = None,
    store: Store | None = None,
) -> RunningController:
    """Open the store, bootstrap the admin, start the gRPC server and the workers.

    ``workers`` defaults to :func:`default_workers`; pass ``[]`` to run the API only."""
    service_token = settings.service_token()
    if not service_token:
        raise ValueError(
            "the controller needs the service credential the apiserver and the notifier share: "
            "set FLAME_SERVICE_TOKEN_FILE (flamectl up and the Helm chart make one)"
        )
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if store is None:
        blob_dir = None if settings.store_uri.startswith("sqlite:") else str(settings.blob_dir)
        store = await open_store(settings.store_uri, blob_dir)
    try:
        generated = await bootstrap_admin(store, settings.bootstrap_token())
        if generated is not None:
            path = settings.data_dir / "admin.token"
            write_private(path, generated + "\n")
            print(f"flame-controller: the admin's token is in {path} (yours to read only)")
        kicker = Kicker()
        ctx = Ctx(
            store=store,
            apiserver_url=settings.apiserver_url or None,
            tracking_uri=settings.tracking_uri or None,
            kick=kicker,
        )
        server, port = await start_server(
            settings.listen,
            [
                (
                    control_pb2_grpc.add_ControlPlaneServicer_to_server,
                    ControlPlaneServicer(ctx, service_token),
                    SERVICE_NAME,
                )
            ],
            settings.security(),
        )
    except BaseException:
        await store.close()
        raise
    running = RunningController(
        port=port, store=store, ctx=ctx, server=server, settings=settings, admin_token=generated
    )
    for factory in default_workers(settings) if workers is None else workers:
        worker = factory(ctx, settings)
        kick = getattr(worker, "kick", None)
        if callable(kick):
            kicker.listeners.append(kick)
        running.workers.append(worker)
        running.tasks.append(asyncio.create_task(worker.run()))
    log.info("controller.started", port=port, store=settings.store_uri.split("?")[0])
    return running
