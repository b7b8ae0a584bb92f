"""gRPC server bootstrap shared by the controller and the notifier: health, reflection,
message-size limits, optional TLS."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

MAX_MESSAGE_BYTES = 128 * 1024 * 1024  # code bundles up to the 64 MiB cap fit with headroom
CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]

Registrar = Callable[[Any, grpc.aio.Server], None]


async def start_server(
    address: str,
    services: Sequence[tuple[Registrar, Any, str]],
    tls: tuple[str, str] | None = None,
) -> tuple[grpc.aio.Server, int]:
    """Start a grpc.aio server with ``(add_XServicer_to_server, servicer, full_name)`` entries.

    Returns the server and the bound port (``address`` may end in ``:0``)."""
    server = grpc.aio.server(options=CHANNEL_OPTIONS)
    names = []
    for register, servicer, full_name in services:
        register(servicer, server)
        names.append(full_name)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [*names, reflection.SERVICE_NAME, "grpc.health.v1.Health"], server
    )
    if tls:
        cert, key = (Path(p).read_bytes() for p in tls)
        port = server.add_secure_port(address, grpc.ssl_server_credentials([(key, cert)]))
    else:
        port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot bind gRPC server to {address}")
    await server.start()
    for name in ["", *names]:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return server, port


def insecure_channel(target: str) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)
