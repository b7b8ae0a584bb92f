"""How a grpc-backend task finds the ``host:port`` of a peer's data-channel server.

* :class:`StaticDiscovery`: a fixed table (task id -> endpoint) from the task config.
* :class:`MemoryDiscovery`: a table shared by the tasks of one process (tests, simulation).
* :class:`ControlPlaneDiscovery`: the apiserver's agent routes; each task posts its endpoint
  and asks for its peers' until they appear. Used at startup only, not per message.
"""

from __future__ import annotations

import asyncio
from typing import Protocol, runtime_checkable

import httpx
import structlog

from flame.config import DiscoverySettings
from flame.errors import ChannelError, ConfigError, PeerTimeout

log = structlog.get_logger(__name__)


@runtime_checkable
class Discovery(Protocol):
    async def register(self, task_id: str, endpoint: str) -> None: ...

    async def resolve(self, task_id: str, timeout: float | None = None) -> str: ...

    async def close(self) -> None: ...


class StaticDiscovery:
    """Endpoints known in advance; registering checks that the table agrees."""

    def __init__(self, endpoints: dict[str, str]) -> None:
        self._endpoints = dict(endpoints)

    def bind_port(self, task_id: str) -> int:
        """The port ``task_id`` must listen on (0 = any, when the table does not list it)."""
        endpoint = self._endpoints.get(task_id)
        if endpoint is None:
            return 0
        try:
            return int(endpoint.rsplit(":", 1)[1])
        except (IndexError, ValueError) as exc:
            raise ConfigError(
                f"static endpoint {endpoint!r} of {task_id} is not host:port"
            ) from exc

    async def register(self, task_id: str, endpoint: str) -> None:
        known = self._endpoints.get(task_id)
        if known is not None and known.rsplit(":", 1)[1] != endpoint.rsplit(":", 1)[1]:
            log.warning(
                "discovery.endpoint_mismatch", task_id=task_id, table=known, actual=endpoint
            )
        self._endpoints.setdefault(task_id, endpoint)

    async def resolve(self, task_id: str, timeout: float | None = None) -> str:
        try:
            return self._endpoints[task_id]
        except KeyError:
            raise ChannelError(f"no static endpoint for task {task_id}") from None

    async def close(self) -> None:
        return None


class MemoryDiscovery:
    """A shared in-process table; ``resolve`` waits (event-driven) until the peer registers."""

    def __init__(self) -> None:
        self._endpoints: dict[str, str] = {}
        self._events: dict[str, asyncio.Event] = {}

    def _event(self, task_id: str) -> asyncio.Event:
        return self._events.setdefault(task_id, asyncio.Event())

    async def register(self, task_id: str, endpoint: str) -> None:
        self._endpoints[task_id] = endpoint
        self._event(task_id).set()

    def unregister(self, task_id: str) -> None:
        self._endpoints.pop(task_id, None)
        self._event(task_id).clear()

    async def resolve(self, task_id: str, timeout: float | None = None) -> str:
        try:
            await asyncio.wait_for(self._event(task_id).wait(), timeout)
        except TimeoutError:
            raise PeerTimeout(f"task {task_id} did not register within {timeout}s") from None
        return self._endpoints[task_id]

    async def close(self) -> None:
        return None


class ControlPlaneDiscovery:
    """Endpoints through the apiserver (``/v1/agent/tasks/{id}/endpoint`` and ``/peers``).

    ``task_id`` is this task: its credential may read the peers of its own job only.
    """

    def __init__(
        self,
        url: str,
        token: str | None,
        task_id: str,
        *,
        retry_initial: float = 0.05,
        retry_max: float = 1.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._client = httpx.AsyncClient(
            base_url=url.rstrip("/"), headers=headers, timeout=10.0, transport=transport
        )
        self._task_id = task_id
        self._retry_initial = retry_initial
        self._retry_max = retry_max
        self._known: dict[str, str] = {}

    async def register(self, task_id: str, endpoint: str, timeout: float = 300.0) -> None:
        """Publish this task's endpoint. A control plane that is restarting (transport errors,
        502/503/504) is retried with capped backoff until ``timeout``; a refusal (4xx) is final."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        delay = self._retry_initial
        while True:
            try:
                resp = await self._client.post(
                    f"/v1/agent/tasks/{task_id}/endpoint", json={"endpoint": endpoint}
                )
                problem = f"HTTP {resp.status_code} {resp.text[:200]}"
                retry = resp.status_code in (502, 503, 504)
                if resp.status_code < 400:
                    break
            except httpx.TransportError as exc:
                problem, retry = str(exc), True
            if not retry or loop.time() + delay > deadline:
                raise ChannelError(f"cannot register endpoint of {task_id}: {problem}")
            log.info("discovery.register_retry", task_id=task_id, error=problem)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._retry_max)
        log.info("discovery.registered", task_id=task_id, endpoint=endpoint)

    async def _fetch(self) -> None:
        resp = await self._client.get(f"/v1/agent/tasks/{self._task_id}/peers")
        if resp.status_code in (401, 403, 404):
            raise ChannelError(
                f"peers of {self._task_id}: HTTP {resp.status_code} {resp.text[:200]}"
            )
        resp.raise_for_status()
        for item in resp.json().get("items", []):
            if item.get("endpoint"):
                self._known[str(item["task_id"])] = str(item["endpoint"])

    async def resolve(self, task_id: str, timeout: float | None = None) -> str:
        """The peer's endpoint, asking again with capped backoff until it appears."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        delay = self._retry_initial
        self._known.pop(task_id, None)  # asked again: the cached one may be stale
        while True:
            try:
                await self._fetch()
            except (httpx.HTTPError, ValueError) as exc:
                log.info("discovery.retry", peer=task_id, error=str(exc))
            if task_id in self._known:
                return self._known[task_id]
            if deadline is not None and loop.time() + delay > deadline:
                raise PeerTimeout(f"no endpoint for task {task_id} within {timeout}s")
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._retry_max)

    async def close(self) -> None:
        await self._client.aclose()


def discovery_from(settings: DiscoverySettings, task_id: str) -> Discovery:
    """The discovery a task config asks for."""
    if settings.kind == "control-plane":
        if not settings.url:
            raise ConfigError("control-plane discovery needs discovery.url")
        return ControlPlaneDiscovery(settings.url, settings.token, task_id)
    return StaticDiscovery(settings.endpoints)
