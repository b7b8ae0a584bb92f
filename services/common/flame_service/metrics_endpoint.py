"""The ``/metrics`` port of the gRPC services and the flamelet (Prometheus text format).

A service's gRPC port speaks only gRPC, so its metrics are served on a separate, small HTTP
port: off unless ``<prefix>METRICS_PORT`` is set, bound to loopback unless
``<prefix>METRICS_HOST`` says otherwise, and, with ``<prefix>METRICS_TOKEN_FILE``, answering only
requests that carry ``Authorization: Bearer <the file's token>``. Before each scrape an optional
``refresh`` coroutine brings level-derived series up to date (the controller counts its jobs).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel, Field, field_validator

log = structlog.get_logger(__name__)

MAX_HEADER_BYTES = 16 * 1024
READ_TIMEOUT = 30.0
Refresh = Callable[[], Awaitable[None]]


class MetricsEndpointSettings(BaseModel):
    """Fields a settings class mixes in (its ``env_prefix`` applies: FLAME_<SVC>_METRICS_*)."""

    metrics_port: int | None = Field(default=None, ge=0, le=65535)  # None/empty: off; 0: any
    metrics_host: str = "127.0.0.1"
    metrics_token_file: Path | None = None

    @field_validator("metrics_port", "metrics_token_file", mode="before")
    @classmethod
    def _empty_is_off(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    def metrics_token(self) -> str | None:
        if self.metrics_token_file is None:
            return None
        token = self.metrics_token_file.read_text().strip()
        if not token:
            raise ValueError(f"metrics token file {self.metrics_token_file} is empty")
        return token


@dataclass
class MetricsServer:
    server: asyncio.Server
    port: int

    async def stop(self) -> None:
        self.server.close()
        with contextlib.suppress(Exception):
            await self.server.wait_closed()


async def start_metrics_server(
    settings: MetricsEndpointSettings,
    registry: CollectorRegistry,
    refresh: Refresh | None = None,
) -> MetricsServer | None:
    """Serve ``registry`` at ``GET /metrics``; None when the settings leave it off."""
    if settings.metrics_port is None:
        return None
    token = settings.metrics_token()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            status, body, headers = await _answer(reader, registry, token, refresh)
            head = [f"HTTP/1.1 {status}", f"Content-Length: {len(body)}", "Connection: close"]
            head += [f"{k}: {v}" for k, v in headers.items()]
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
            await writer.drain()
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    server = await asyncio.start_server(
        handle, settings.metrics_host, settings.metrics_port, limit=MAX_HEADER_BYTES
    )
    port = server.sockets[0].getsockname()[1]
    log.info("metrics.serving", host=settings.metrics_host, port=port, token=token is not None)
    return MetricsServer(server, port)


async def _answer(
    reader: asyncio.StreamReader,
    registry: CollectorRegistry,
    token: str | None,
    refresh: Refresh | None,
) -> tuple[str, bytes, dict[str, str]]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3:
        return "400 Bad Request", b"bad request\n", {}
    method, target, _ = parts
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    if target.split("?", 1)[0] != "/metrics":
        return "404 Not Found", b"not found\n", {}
    if method not in ("GET", "HEAD"):
        return "405 Method Not Allowed", b"method not allowed\n", {"Allow": "GET, HEAD"}
    if token is not None and not _bearer_ok(headers.get("authorization", ""), token):
        return "401 Unauthorized", b"unauthorized\n", {"WWW-Authenticate": "Bearer"}
    if refresh is not None:
        try:
            await refresh()
        except Exception as exc:  # a failed refresh leaves the last values; the scrape goes on
            log.warning("metrics.refresh_failed", error=str(exc))
    body = generate_latest(registry)
    return "200 OK", b"" if method == "HEAD" else body, {"Content-Type": CONTENT_TYPE_LATEST}


def _bearer_ok(header: str, token: str) -> bool:
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())
