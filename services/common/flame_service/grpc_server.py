"""gRPC server bootstrap shared by the controller and the notifier: health, reflection,
message-size limits, and the port opened by :func:`flame_service.connect.grpc_listen`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from flame_service.connect import GRPC_OPTIONS, PLAINTEXT, Security, grpc_listen

Registrar = Callable[[Any, grpc.aio.Server], None]


async def start_server(
    address: str,
    services: Sequence[tuple[Registrar, Any, str]],
    security: Security = PLAINTEXT,
) -> tuple[grpc.aio.Server, int]:
    """Start a grpc.aio server with ``(add_XServicer_to_server, servicer, full_name)`` entries.

    Returns the server and the bound port (``address`` may end in ``:0``)."""
    server = grpc.aio.server(options=GRPC_OPTIONS)
    names = []
    for register, servicer, full_name in services:
        register(servicer, server)
        names.append(full_name)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [*names, reflection.SERVICE_NAME, "grpc.health.v1.Health"], server
    )
    port = grpc_listen(server, address, security)
    if port == 0:
        raise OSError(f"cannot bind gRPC server to {address}")
    await server.start()
    for name in ["", *names]:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return server, port
