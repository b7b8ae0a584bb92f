"""Leader election over a ``coordination.k8s.io/v1`` Lease, so several controller replicas can
run with one writer (the chart's ``controller.leaderElection``).

The algorithm is client-go's: a candidate reads the Lease; it takes it when nobody holds it or
when the holder has not renewed it for ``lease_duration`` (measured on the candidate's own
monotonic clock from the moment it last saw the Lease change, so clocks need not agree), with an
update that carries the Lease's ``resourceVersion`` (two candidates cannot both win: one gets
``409 Conflict``). The leader renews every ``retry_period``; when it has not managed to for
``renew_deadline`` (shorter than ``lease_duration``) it steps down before anyone else may take
over. On a clean stop it gives the Lease up (``holderIdentity`` cleared), so a standby takes
over within ``retry_period`` instead of ``lease_duration``.

:class:`LeaderGate` runs the controller's background workers (the reconciler and its deployer)
only while this replica leads, and says so through the gRPC health service: a standby reports
``flame.v1.ControlPlane`` NOT_SERVING, so the readiness probe keeps it out of the Service. The
API itself is served by every replica (the store's compare-and-set keeps concurrent writes
safe); only the leader reconciles.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import structlog
from kubernetes import client

from .kubeapi import ApiException, ConnectionSettings, api_client, call, in_cluster_namespace
from .settings import ControllerSettings

log = structlog.get_logger(__name__)

# What the election calls on its Lease (the chart's leader-election Role grants exactly this).
RBAC: dict[tuple[str, str], frozenset[str]] = {
    ("coordination.k8s.io", "leases"): frozenset({"create", "get", "update"}),
}


def default_identity() -> str:
    return f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"


def _now_micro() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaseLock:
    """The Lease ``namespace/name`` as a lock held by ``identity`` (sync calls: run in a thread)."""

    def __init__(self, api: client.ApiClient, namespace: str, name: str, identity: str) -> None:
        self.coordination = client.CoordinationV1Api(api)
        self.namespace, self.name, self.identity = namespace, name, identity
        self._observed: tuple[Any, ...] | None = None  # the holder record last seen ...
        self._observed_at = 0.0  # ... and when (monotonic)

    def try_acquire_or_renew(self, lease_duration: float) -> bool:
        now = _now_micro()
        try:
            lease = call(self.coordination.read_namespaced_lease, self.name, self.namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise
            spec: dict[str, Any] = {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": max(1, round(lease_duration)),
                "acquireTime": now,
                "renewTime": now,
                "leaseTransitions": 0,
            }
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": spec,
            }
            try:
                call(self.coordination.create_namespaced_lease, self.namespace, body)
            except ApiException as exc2:
                if exc2.status == 409:  # another candidate created it first
                    return False
                raise
            self._saw(spec)
            return True
        spec = lease.get("spec") or {}
        self._saw(spec)
        holder = spec.get("holderIdentity") or ""
        duration = float(spec.get("leaseDurationSeconds") or lease_duration)
        if holder and holder != self.identity and time.monotonic() < self._observed_at + duration:
            return False  # held, and renewed recently enough
        transitions = int(spec.get("leaseTransitions") or 0)
        new_spec = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": max(1, round(lease_duration)),
            "acquireTime": spec.get("acquireTime") if holder == self.identity else now,
            "renewTime": now,
            "leaseTransitions": transitions if holder == self.identity else transitions + 1,
        }
        lease["spec"] = new_spec
        try:
            call(self.coordination.replace_namespaced_lease, self.name, self.namespace, lease)
        except ApiException as exc:
            if exc.status == 409:  # someone wrote in between
                return False
            raise
        self._saw(new_spec)
        return True

    def release(self) -> None:
        """Give the Lease up if we hold it (best effort)."""
        lease = call(self.coordination.read_namespaced_lease, self.name, self.namespace)
        spec = lease.get("spec") or {}
        if spec.get("holderIdentity") != self.identity:
            return
        lease["spec"] = {
            **spec,
            "holderIdentity": None,
            "leaseDurationSeconds": 1,
            "renewTime": _now_micro(),
        }
        call(self.coordination.replace_namespaced_lease, self.name, self.namespace, lease)

    def _saw(self, spec: dict[str, Any]) -> None:
        record = tuple(spec.get(k) for k in ("holderIdentity", "renewTime", "acquireTime"))
        if record != self._observed:
            self._observed, self._observed_at = record, time.monotonic()


class Lock(Protocol):
    identity: str

    def try_acquire_or_renew(self, lease_duration: float) -> bool: ...
    def release(self) -> None: ...


@dataclass(frozen=True)
class Timing:
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def __post_init__(self) -> None:
        if not self.lease_duration > self.renew_deadline > self.retry_period * 1.2 > 0:
            raise ValueError(
                "leader election needs lease duration > renew deadline > 1.2 x retry period > 0"
                f" (got {self.lease_duration}, {self.renew_deadline}, {self.retry_period})"
            )


class LeaderElector:
    """Campaign for the lock; ``on_started`` when it is ours, ``on_stopped`` when it is lost."""

    def __init__(
        self,
        lock: Lock,
        timing: Timing,
        *,
        on_started: Callable[[], Awaitable[None]],
        on_stopped: Callable[[], Awaitable[None]],
    ) -> None:
        self.lock = lock
        self.timing = timing
        self.on_started = on_started
        self.on_stopped = on_stopped
        self.leading = False
        self._stopping = asyncio.Event()

    async def _try(self) -> bool:
        try:
            return await asyncio.to_thread(
                self.lock.try_acquire_or_renew, self.timing.lease_duration
            )
        except Exception as exc:  # the API server is unreachable: not acquired, not renewed
            log.warning("leader.lease_error", error=f"{type(exc).__name__}: {exc}")
            return False

    async def _pause(self, seconds: float) -> bool:
        """Sleep; True when asked to stop meanwhile."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)
        return self._stopping.is_set()

    async def run(self) -> None:
        t = self.timing
        while not self._stopping.is_set():
            # campaign
            while not await self._try():
                if await self._pause(t.retry_period * random.uniform(1.0, 1.2)):
                    return
            self.leading = True
            log.info("leader.elected", identity=self.lock.identity)
            await self.on_started()
            # renew until it fails for renew_deadline
            last = time.monotonic()
            while not self._stopping.is_set():
                if await self._pause(t.retry_period):
                    break
                if await self._try():
                    last = time.monotonic()
                elif time.monotonic() - last >= t.renew_deadline:
                    log.warning("leader.lost", identity=self.lock.identity)
                    break
            self.leading = False
            await self.on_stopped()
            if self._stopping.is_set():
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(self.lock.release)
                log.info("leader.released", identity=self.lock.identity)

    async def stop(self) -> None:
        self._stopping.set()


class Worker(Protocol):
    async def run(self) -> None: ...
    async def stop(self) -> None: ...


class LeaderGate:
    """Runs the workers ``make_workers()`` builds only while leading (a Worker itself)."""

    def __init__(
        self,
        lock: Lock,
        timing: Timing,
        make_workers: Callable[[], Sequence[Worker]],
        on_leading: Callable[[bool], Awaitable[None]],
    ) -> None:
        self.make_workers = make_workers
        self.on_leading = on_leading
        self.elector = LeaderElector(lock, timing, on_started=self._start, on_stopped=self._stop)
        self.workers: list[Worker] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._running: asyncio.Task[None] | None = None
        self.terms = 0  # how many times this replica became the leader

    @property
    def leading(self) -> bool:
        return self.elector.leading

    def kick(self, job_id: str | None = None) -> None:
        for worker in self.workers:
            kick = getattr(worker, "kick", None)
            if callable(kick):
                kick(job_id)

    async def _start(self) -> None:
        self.terms += 1
        self.workers = list(self.make_workers())
        self._tasks = [asyncio.create_task(w.run()) for w in self.workers]
        await self.on_leading(True)

    async def _stop(self) -> None:
        await self.on_leading(False)  # out of the Service first
        for worker in self.workers:
            with contextlib.suppress(Exception):
                await worker.stop()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.workers, self._tasks = [], []

    async def run(self) -> None:
        self._running = asyncio.current_task()
        await self.elector.run()

    async def stop(self) -> None:
        """Stop campaigning; when leading, stop the workers and give the Lease up first."""
        await self.elector.stop()
        running, self._running = self._running, None
        if running is not None and running is not asyncio.current_task():
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(asyncio.shield(running), timeout=30)


def gate_for(
    settings: ControllerSettings,
    make_workers: Callable[[], Sequence[Worker]],
    on_leading: Callable[[bool], Awaitable[None]],
    api: client.ApiClient | None = None,
) -> LeaderGate:
    """The gate the controller's settings describe (``FLAME_CONTROLLER_LEADER_ELECTION_*``)."""
    conn = ConnectionSettings()
    namespace = (
        settings.leader_election_namespace or conn.namespace or in_cluster_namespace() or "default"
    )
    lock = LeaseLock(
        api or api_client(conn.kubeconfig, conn.context),
        namespace,
        settings.leader_election_lease_name,
        settings.leader_election_identity or default_identity(),
    )
    timing = Timing(
        settings.leader_election_lease_duration_seconds,
        settings.leader_election_renew_deadline_seconds,
        settings.leader_election_retry_period_seconds,
    )
    return LeaderGate(lock, timing, make_workers, on_leading)
