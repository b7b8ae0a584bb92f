"""Container health check for the Flame images: ``python healthcheck.py SERVICE``.

Kubernetes ignores an image's HEALTHCHECK (the Helm chart has its own probes); this is for
`docker run` and compose. It reads the same ``FLAME_*`` variables the service does:

* ``apiserver``: ``GET /healthz`` on 127.0.0.1 (HTTPS when ``FLAME_APISERVER_TLS_CERT`` is
  set; the CA from ``FLAME_APISERVER_TLS_CA`` is trusted, the host name is not checked).
* ``controller`` / ``notifier``: the standard gRPC health service, on the plaintext health
  port ``FLAME_<SERVICE>_HEALTH_LISTEN`` when set, else on the service port (over TLS when
  ``FLAME_<SERVICE>_TLS_CERT`` is set, expecting the name ``FLAME_HEALTHCHECK_SERVER_NAME``,
  default ``localhost``).
* ``mlflow``: ``GET /health`` on 127.0.0.1:``MLFLOW_PORT`` (default 5000).

Exit 0 when healthy, 1 otherwise (with the reason on stderr).
"""

from __future__ import annotations

import os
import ssl
import sys
import urllib.request
from pathlib import Path


def _port(address: str) -> str:
    return address.rsplit(":", 1)[1]


def _http(url: str, ca: str | None) -> None:
    context = None
    if url.startswith("https:"):
        context = ssl.create_default_context(cafile=ca)
        context.check_hostname = False
    with urllib.request.urlopen(url, timeout=4, context=context) as response:  # noqa: S310
        if response.status != 200:
            raise RuntimeError(f"{url} answered {response.status}")


def _grpc(service: str, default_listen: str) -> None:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    prefix = f"FLAME_{service.upper()}_"
    health = os.environ.get(prefix + "HEALTH_LISTEN")
    cert = os.environ.get(prefix + "TLS_CERT")
    if health:
        channel = grpc.insecure_channel(f"127.0.0.1:{_port(health)}")
    else:
        target = f"127.0.0.1:{_port(os.environ.get(prefix + 'LISTEN', default_listen))}"
        if cert:
            ca_path = os.environ.get(prefix + "TLS_CA")
            ca = Path(ca_path).read_bytes() if ca_path else None
            name = os.environ.get("FLAME_HEALTHCHECK_SERVER_NAME", "localhost")
            channel = grpc.secure_channel(
                target,
                grpc.ssl_channel_credentials(root_certificates=ca),
                options=[("grpc.ssl_target_name_override", name)],
            )
        else:
            channel = grpc.insecure_channel(target)
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=4)
    if reply.status != health_pb2.HealthCheckResponse.SERVING:
        raise RuntimeError(f"{service} health is {reply.status}")


def main(argv: list[str]) -> int:
    service = argv[1] if len(argv) > 1 else ""
    try:
        if service == "apiserver":
            port = os.environ.get("FLAME_APISERVER_PORT", "10100")
            tls = bool(os.environ.get("FLAME_APISERVER_TLS_CERT"))
            scheme = "https" if tls else "http"
            _http(f"{scheme}://127.0.0.1:{port}/healthz", os.environ.get("FLAME_APISERVER_TLS_CA"))
        elif service == "controller":
            _grpc("controller", "0.0.0.0:10102")
        elif service == "notifier":
            _grpc("notifier", "0.0.0.0:10101")
        elif service == "mlflow":
            _http(f"http://127.0.0.1:{os.environ.get('MLFLOW_PORT', '5000')}/health", None)
        else:
            print(
                f"usage: healthcheck.py apiserver|controller|notifier|mlflow ({service!r})",
                file=sys.stderr,
            )
            return 1
    except Exception as exc:  # any failure is "unhealthy"
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
