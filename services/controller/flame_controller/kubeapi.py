"""The one place the controller opens Kubernetes API clients (the deployer, leader election).

Configuration: a kubeconfig when one is named (``FLAME_KUBERNETES_KUBECONFIG``, optionally a
context), else the pod's service account when running in a cluster, else the default kubeconfig
(``$KUBECONFIG`` or ``~/.kube/config``). Calls go through the official ``kubernetes`` client; its
sync API runs in worker threads (``asyncio.to_thread``). :func:`call` returns the raw JSON of a
response as a dict, so the code reads objects exactly as the API documents them.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import urllib3
from kubernetes import client, config
from kubernetes.client.rest import ApiException
from pydantic_settings import BaseSettings, SettingsConfigDict

SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")

__all__ = [
    "ApiException",
    "ConnectionSettings",
    "KubernetesUnavailable",
    "api_client",
    "call",
    "call_in_thread",
    "in_cluster",
    "in_cluster_namespace",
    "pod_log",
    "status_of",
]


class ConnectionSettings(BaseSettings):
    """Where the Kubernetes API is (env ``FLAME_KUBERNETES_*``, shared with the deployer)."""

    model_config = SettingsConfigDict(env_prefix="FLAME_KUBERNETES_", extra="ignore")

    kubeconfig: str | None = None
    context: str | None = None
    namespace: str = ""


def in_cluster() -> bool:
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST")) and SERVICE_ACCOUNT_NAMESPACE.exists()


def in_cluster_namespace() -> str | None:
    try:
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or None
    except OSError:
        return None


def api_client(kubeconfig: str | None = None, context: str | None = None) -> client.ApiClient:
    """A new API client (never the library's global default configuration)."""
    if kubeconfig or context or not in_cluster():
        return config.new_client_from_config(config_file=kubeconfig, context=context)
    configuration = client.Configuration()
    config.load_incluster_config(client_configuration=configuration)
    return client.ApiClient(configuration)


def call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
    """Call a generated API method and return the response body as plain JSON."""
    resp = fn(*args, _preload_content=False, **kwargs)
    try:
        data = resp.data
    finally:
        resp.release_conn()
    body = json.loads(data) if data else {}
    if not isinstance(body, dict):
        raise ValueError(f"unexpected Kubernetes API response: {body!r:.200}")
    return body


def status_of(exc: BaseException) -> int | None:
    """The HTTP status of a Kubernetes API error (None for a transport error)."""
    return exc.status if isinstance(exc, ApiException) else None


def pod_log(
    api: client.ApiClient,
    namespace: str,
    name: str,
    *,
    container: str,
    since_time: str | None = None,
    timeout: float = 30.0,
) -> str:
    """A container's log with an RFC 3339 timestamp before every line (``GET .../pods/NAME/log``
    with ``timestamps=true``, from ``sinceTime`` when given: the generated method lacks it)."""
    query: list[tuple[str, str]] = [("container", container), ("timestamps", "true")]
    if since_time is not None:
        query.append(("sinceTime", since_time))
    resp = api.call_api(
        "/api/v1/namespaces/{namespace}/pods/{name}/log",
        "GET",
        {"namespace": namespace, "name": name},
        query,
        {"Accept": "text/plain"},
        response_types_map={200: "str"},
        auth_settings=["BearerToken"],
        _preload_content=False,
        _return_http_data_only=True,
        _request_timeout=timeout,
    )
    try:
        data: bytes = resp.data
    finally:
        resp.release_conn()
    return data.decode("utf-8", errors="replace")


class KubernetesUnavailable(OSError):
    """The API server did not answer, or answered 429 / 5xx: worth retrying later."""


async def call_in_thread(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a blocking client call in a worker thread; transient failures become
    :class:`KubernetesUnavailable` (an OSError: the reconciler retries)."""
    try:
        return await asyncio.to_thread(fn, *args, **kwargs)
    except ApiException as exc:
        if exc.status in (429, 500, 502, 503, 504):
            raise KubernetesUnavailable(f"Kubernetes API: {exc.status} {exc.reason}") from exc
        raise
    except urllib3.exceptions.HTTPError as exc:
        raise KubernetesUnavailable(f"Kubernetes API unreachable: {exc}") from exc
