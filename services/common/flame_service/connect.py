"""The one place a service decides how to connect (STYLE §10): every gRPC channel, gRPC
listening port and HTTP client of the control plane is opened here, from one
:class:`Security` that the process builds once from its settings.

Plaintext is what a :class:`Security` without certificates gives; the security issue turns TLS on
by default and hands every service its material, and no code outside this module chooses.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx

from flame_service.auth import SERVICE_KEY

MAX_MESSAGE_BYTES = 128 * 1024 * 1024  # code bundles up to the 64 MiB cap fit with headroom
# an idle pooled connection is dropped before the server's own keep-alive ends (gunicorn's is
# 2 s, uvicorn's 5 s): reusing one the server is closing fails with "Server disconnected"
HTTP_LIMITS = httpx.Limits(keepalive_expiry=1.0)
GRPC_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]


@dataclass(frozen=True)
class Security:
    """This process's transport security: the CA it trusts and its own certificate (PEM).

    ``ca`` set: clients verify servers against it (and servers ask clients for a certificate
    signed by it); ``cert``/``key`` set: this process presents them (as a server, and as a
    client where mutual TLS is wanted). Nothing set: plaintext.
    """

    ca: bytes | None = None
    cert: bytes | None = None
    key: bytes | None = None

    @classmethod
    def from_files(
        cls,
        ca: str | Path | None = None,
        cert: str | Path | None = None,
        key: str | Path | None = None,
    ) -> Security:
        def read(p: str | Path | None) -> bytes | None:
            return Path(p).read_bytes() if p else None

        return cls(ca=read(ca), cert=read(cert), key=read(key))

    @property
    def tls(self) -> bool:
        return self.ca is not None or self.cert is not None

    def __repr__(self) -> str:  # never print key material
        return f"Security(tls={self.tls}, client_cert={self.cert is not None})"


PLAINTEXT = Security()


def grpc_channel(
    target: str,
    security: Security = PLAINTEXT,
    options: Sequence[tuple[str, Any]] = (),
    *,
    service_token: str | None = None,
) -> grpc.aio.Channel:
    """A client channel to ``target`` (``host:port``); with ``service_token`` every call on it
    carries the service credential (the apiserver and the notifier calling the controller, the
    controller calling the notifier)."""
    opts = [*GRPC_OPTIONS, *options]
    interceptors = [_ServiceCredential(service_token)] if service_token else None
    if not security.tls:
        return grpc.aio.insecure_channel(target, options=opts, interceptors=interceptors)
    creds = grpc.ssl_channel_credentials(
        root_certificates=security.ca, private_key=security.key, certificate_chain=security.cert
    )
    return grpc.aio.secure_channel(target, creds, options=opts, interceptors=interceptors)


class _ServiceCredential(
    grpc.aio.UnaryUnaryClientInterceptor,
    grpc.aio.UnaryStreamClientInterceptor,
):
    """Adds the service credential to the metadata of every call."""

    def __init__(self, token: str) -> None:
        self._entry = (SERVICE_KEY, token)

    def _with_token(self, details: Any) -> Any:
        metadata = [*(details.metadata or ()), self._entry]
        return details._replace(metadata=metadata)

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._with_token(details), request)

    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._with_token(details), request)


def grpc_listen(
    server: grpc.aio.Server,
    address: str,
    security: Security = PLAINTEXT,
    *,
    client_certs: bool = True,
) -> int:
    """Open ``address`` on ``server``; returns the bound port (0 when binding failed).

    With TLS and ``client_certs``, only clients presenting a certificate signed by
    ``security.ca`` get in (the controller: its callers are the other services); without, any
    client that speaks TLS does and authenticates with a token (the notifier's flamelets)."""
    if security.cert is None or security.key is None:
        return server.add_insecure_port(address)
    creds = grpc.ssl_server_credentials(
        [(security.key, security.cert)],
        root_certificates=security.ca if client_certs else None,
        require_client_auth=client_certs and security.ca is not None,
    )
    return server.add_secure_port(address, creds)


def ssl_context(security: Security) -> ssl.SSLContext | bool:
    """What httpx's ``verify`` takes: a context trusting ``security.ca`` (with this process's
    certificate for mutual TLS), or True for the system's trust store."""
    if security.ca is None:
        return True
    ctx = ssl.create_default_context(cadata=security.ca.decode())
    if security.cert is not None and security.key is not None:
        _load_pair(ctx, security.cert, security.key)
    return ctx


def _load_pair(ctx: ssl.SSLContext, cert: bytes, key: bytes) -> None:
    import tempfile

    # ssl only loads key pairs from files: write them to a private temp dir for the call
    with tempfile.TemporaryDirectory() as tmp:
        cert_path, key_path = Path(tmp) / "cert.pem", Path(tmp) / "key.pem"
        cert_path.write_bytes(cert)
        key_path.touch(mode=0o600)
        key_path.write_bytes(key)
        ctx.load_cert_chain(cert_path, key_path)


def http_client(
    base_url: str,
    security: Security = PLAINTEXT,
    *,
    token: str | None = None,
    basic_auth: tuple[str, str] | None = None,
    timeout: float = 30.0,
    transport: httpx.AsyncBaseTransport | None = None,
) -> httpx.AsyncClient:
    """An async HTTP client for ``base_url`` (bearer ``token`` or ``basic_auth`` if given)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.AsyncClient(
        base_url=base_url.rstrip("/"),
        headers=headers,
        auth=httpx.BasicAuth(*basic_auth) if basic_auth else None,
        timeout=timeout,
        verify=ssl_context(security),
        transport=transport,
        limits=HTTP_LIMITS,
    )
