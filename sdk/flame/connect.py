"""The one place the SDK decides how to connect (STYLE §10): every connection a task or
``flamectl`` opens — gRPC channels and listening ports of the data plane, HTTP clients to the
apiserver, the MQTT client — comes from here, with one :class:`Security` built from the task's
config (``TaskConfig.tls``) or the CLI's settings. No other module picks plaintext or TLS.
"""

from __future__ import annotations

import os
import ssl
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from flame.config import MqttSettings, TaskConfig


@dataclass(frozen=True)
class Security:
    """The CA this process trusts and its own certificate (PEM); nothing set: plaintext."""

    ca: bytes | None = None
    cert: bytes | None = None
    key: bytes | None = None

    @classmethod
    def of(cls, config: TaskConfig) -> Security:
        t = config.tls

        def pem(text: str | None) -> bytes | None:
            return text.encode() if text else None

        return cls(ca=pem(t.ca_pem), cert=pem(t.cert_pem), key=pem(t.key_pem))

    @classmethod
    def from_files(cls, ca: str | Path | None) -> Security:
        return cls(ca=Path(ca).read_bytes() if ca else None)

    @property
    def tls(self) -> bool:
        return self.ca is not None or self.cert is not None

    def __repr__(self) -> str:  # never print key material
        return f"Security(tls={self.tls}, client_cert={self.cert is not None})"


PLAINTEXT = Security()
# an idle pooled connection is dropped before the server's keep-alive ends (uvicorn's is 5 s):
# reusing one the server is closing fails with "Server disconnected"
HTTP_LIMITS = httpx.Limits(keepalive_expiry=1.0)


def grpc_channel(
    target: str,
    security: Security,
    options: Sequence[tuple[str, Any]] = (),
    *,
    server_name: str | None = None,
) -> Any:
    """A grpc.aio client channel to ``target`` (grpc is imported only when used). With TLS, the
    server's certificate must name ``server_name`` when given, else the host of ``target``."""
    import grpc

    if not security.tls:
        return grpc.aio.insecure_channel(target, options=list(options))
    creds = grpc.ssl_channel_credentials(
        root_certificates=security.ca, private_key=security.key, certificate_chain=security.cert
    )
    opts = list(options)
    if server_name:
        opts.append(("grpc.ssl_target_name_override", server_name))
    return grpc.aio.secure_channel(target, creds, options=opts)


def grpc_listen(server: Any, address: str, security: Security) -> int:
    """Open ``address`` on a grpc.aio server; returns the bound port (0: binding failed)."""
    import grpc

    if security.cert is None or security.key is None:
        return int(server.add_insecure_port(address))
    creds = grpc.ssl_server_credentials(
        [(security.key, security.cert)],
        root_certificates=security.ca,
        require_client_auth=security.ca is not None,
    )
    return int(server.add_secure_port(address, creds))


def ssl_context(security: Security) -> ssl.SSLContext | bool:
    """What httpx's ``verify`` and paho's TLS take: a context trusting ``security.ca`` (with
    this process's certificate for mutual TLS), or True for the system's trust store."""
    if security.ca is None:
        return True
    ctx = ssl.create_default_context(cadata=security.ca.decode())
    if security.cert is not None and security.key is not None:
        with tempfile.TemporaryDirectory() as tmp:  # ssl loads key pairs from files only
            cert, key = Path(tmp) / "cert.pem", Path(tmp) / "key.pem"
            cert.write_bytes(security.cert)
            key.touch(mode=0o600)
            key.write_bytes(security.key)
            ctx.load_cert_chain(cert, key)
    return ctx


def _headers(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def http_client(
    base_url: str,
    security: Security = PLAINTEXT,
    *,
    token: str | None = None,
    timeout: float = 10.0,
    transport: httpx.AsyncBaseTransport | None = None,
) -> httpx.AsyncClient:
    """An async HTTP client for the apiserver at ``base_url``."""
    return httpx.AsyncClient(
        base_url=base_url.rstrip("/"),
        headers=_headers(token),
        timeout=timeout,
        verify=ssl_context(security),
        transport=transport,
        limits=HTTP_LIMITS,
    )


def sync_http_client(
    base_url: str,
    security: Security = PLAINTEXT,
    *,
    token: str | None = None,
    timeout: float = 30.0,
    transport: httpx.BaseTransport | None = None,
) -> httpx.Client:
    """A blocking HTTP client for the apiserver (``flamectl``, the metrics reporter)."""
    return httpx.Client(
        base_url=base_url.rstrip("/"),
        headers=_headers(token),
        timeout=timeout,
        verify=ssl_context(security),
        transport=transport,
        limits=HTTP_LIMITS,
    )


def mlflow_http_client(
    base_url: str, *, timeout: float = 60.0, transport: httpx.BaseTransport | None = None
) -> httpx.Client:
    """A blocking HTTP client for an MLflow tracking server, with the login and TLS settings
    MLflow's own client reads from the environment: ``MLFLOW_TRACKING_USERNAME`` and
    ``_PASSWORD`` (or ``_TOKEN``), ``MLFLOW_TRACKING_SERVER_CERT_PATH``,
    ``MLFLOW_TRACKING_INSECURE_TLS``."""
    env = os.environ
    auth: httpx.BasicAuth | None = None
    headers: dict[str, str] = {}
    if env.get("MLFLOW_TRACKING_USERNAME") and env.get("MLFLOW_TRACKING_PASSWORD"):
        auth = httpx.BasicAuth(env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"])
    elif env.get("MLFLOW_TRACKING_TOKEN"):
        headers = _headers(env["MLFLOW_TRACKING_TOKEN"])
    verify: bool | str = True
    if env.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() == "true":
        verify = False
    elif env.get("MLFLOW_TRACKING_SERVER_CERT_PATH"):
        verify = env["MLFLOW_TRACKING_SERVER_CERT_PATH"]
    return httpx.Client(
        base_url=base_url.rstrip("/"),
        auth=auth,
        headers=headers,
        verify=verify,
        timeout=timeout,
        transport=transport,
        limits=HTTP_LIMITS,
    )


def mqtt_client(s: MqttSettings, security: Security, client_id: str) -> Any:
    """A paho MQTT 5 client for the broker ``s`` names, with its credentials and TLS set
    (the broker's CA file if given, else the task's CA)."""
    import paho.mqtt.client as mqtt

    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5
    )
    if s.username is not None:
        client.username_pw_set(s.username, s.password)
    if s.tls:
        if s.ca_file or security.ca is None:
            client.tls_set(ca_certs=s.ca_file)
        else:
            client.tls_set_context(ssl_context(security))  # type: ignore[arg-type]
    return client
