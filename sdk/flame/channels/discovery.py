"""How a grpc-backend task finds the ``host:port`` of a peer's data-channel server.

* :class:`StaticDiscovery`: a fixed table (task id -> endpoint) from the task config.
* :class:`MemoryDiscovery`: a table shared by the tasks of one process (tests, simulation).
* :class:`ControlPlaneDiscovery`: the apiserver's agent routes; each task posts its endpoint
  and asks for its peers' until they appear. Used at startup only, not per message.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol, runtime_checkable

import httpx
import structlog
import tenacity

from flame.config import DiscoverySettings
from flame.connect import PLAINTEXT, Security, http_client
from flame.errors import ChannelError, ConfigError, PeerTimeout
from flame_spec.retry import retrying

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


class _Restarting(Exception):
    """The control plane is not answering right now (restarting): try again."""


class _NotYet(Exception):
    """The peer has not registered its endpoint yet: ask again."""


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
        security: Security = PLAINTEXT,
    ) -> None:
        self._client = http_client(url, security, token=token, transport=transport)
        self._task_id = task_id
        self._retry_initial = retry_initial
        self._retry_max = retry_max
        self._known: dict[str, str] = {}

    async def register(self, task_id: str, endpoint: str, timeout: float = 300.0) -> None:
        """Publish this task's endpoint. A control plane that is restarting (transport errors,
        502/503/504) is retried with backoff until ``timeout``; a refusal (4xx) is final."""

        def on_retry(exc: BaseException, delay: float) -> None:
            log.info("discovery.register_retry", task_id=task_id, error=str(exc), delay=delay)

        try:
            async for attempt in self._retrying(timeout, _Restarting, on_retry):
                with attempt:
                    try:
                        resp = await self._client.post(
                            f"/v1/agent/tasks/{task_id}/endpoint", json={"endpoint": endpoint}
                        )
                    except httpx.TransportError as exc:
                        raise _Restarting(str(exc)) from exc
                    problem = f"HTTP {resp.status_code} {resp.text[:200]}"
                    if resp.status_code in (502, 503, 504):
                        raise _Restarting(problem)
                    if resp.status_code >= 400:
                        raise ChannelError(f"cannot register endpoint of {task_id}: {problem}")
        except _Restarting as exc:
            raise ChannelError(f"cannot register endpoint of {task_id}: {exc}") from exc
        log.info("discovery.registered", task_id=task_id, endpoint=endpoint)

    def _retrying(
        self,
        timeout: float | None,
        transient: type[BaseException],
        on_retry: Callable[[BaseException, float], None],
    ) -> tenacity.AsyncRetrying:
        return retrying(
            initial=self._retry_initial,
            maximum=self._retry_max,
            deadline=timeout,
            retry=lambda exc: isinstance(exc, transient),
            on_retry=on_retry,
        )

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
        """The peer's endpoint, asking again with backoff until it appears."""
        self._known.pop(task_id, None)  # asked again: the cached one may be stale

        def on_retry(exc: BaseException, delay: float) -> None:
            log.info("discovery.retry", peer=task_id, error=str(exc), delay=delay)

        try:
            async for attempt in self._retrying(timeout, _NotYet, on_retry):
                with attempt:
                    try:
                        await self._fetch()
                    except (httpx.HTTPError, ValueError) as exc:
                        raise _NotYet(str(exc)) from exc
                    if task_id not in self._known:
                        raise _NotYet(f"{task_id} has no endpoint yet")
        except _NotYet:
            raise PeerTimeout(f"no endpoint for task {task_id} within {timeout}s") from None
        return self._known[task_id]

    async def close(self) -> None:
        await self._client.aclose()


def discovery_from(
    settings: DiscoverySettings, task_id: str, security: Security = PLAINTEXT
) -> Discovery:
    """The discovery a task config asks for."""
    if settings.kind == "control-plane":
        if not settings.url:
            raise ConfigError("control-plane discovery needs discovery.url")
        return ControlPlaneDiscovery(settings.url, settings.token, task_id, security=security)
    return StaticDiscovery(settings.endpoints)
