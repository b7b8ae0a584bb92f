"""gRPC server bootstrap shared by the controller and the notifier: health, reflection,
message-size limits, and the port opened by :func:`flame_service.connect.grpc_listen`.

Kubelet gRPC probes cannot speak TLS, so a service may also open a plaintext **health port**
(:func:`start_health_server`) that serves ``grpc.health.v1.Health`` and nothing else, answering
from the same health servicer as the main port.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from flame_service.connect import GRPC_OPTIONS, PLAINTEXT, Security, grpc_listen

Registrar = Callable[[Any, grpc.aio.Server], None]
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def start_server(
    address: str,
    services: Sequence[tuple[Registrar, Any, str]],
    security: Security = PLAINTEXT,
    *,
    health_servicer: health.aio.HealthServicer | None = None,
    not_serving: Collection[str] = (),
    client_certs: bool = True,
) -> tuple[grpc.aio.Server, int]:
    """Start a grpc.aio server with ``(add_XServicer_to_server, servicer, full_name)`` entries.

    Every service (and the server as a whole, ``""``) reports SERVING, except those named in
    ``not_serving`` (NOT_SERVING until the caller sets them on ``health_servicer``). Returns the
    server and the bound port (``address`` may end in ``:0``). ``client_certs``: see
    :func:`~flame_service.connect.grpc_listen`."""
    server = grpc.aio.server(options=GRPC_OPTIONS)
    names = []
    for register, servicer, full_name in services:
        register(servicer, server)
        names.append(full_name)
    health_servicer = health_servicer or health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [*names, reflection.SERVICE_NAME, "grpc.health.v1.Health"], server
    )
    port = grpc_listen(server, address, security, client_certs=client_certs)
    if port == 0:
        raise OSError(f"cannot bind gRPC server to {address}")
    await server.start()
    for name in ["", *names]:
        serving = name not in not_serving
        await health_servicer.set(name, SERVING if serving else NOT_SERVING)
    return server, port


async def start_health_server(
    address: str, health_servicer: health.aio.HealthServicer
) -> tuple[grpc.aio.Server, int]:
    """A plaintext server with only ``grpc.health.v1.Health``, answering from
    ``health_servicer`` (the main server's): for probes that cannot speak TLS. Returns the
    server and its bound port."""
    server = grpc.aio.server(options=GRPC_OPTIONS)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = grpc_listen(server, address, PLAINTEXT)  # health only: nothing secret crosses it
    if port == 0:
        raise OSError(f"cannot bind the gRPC health port to {address}")
    await server.start()
    return server, port
