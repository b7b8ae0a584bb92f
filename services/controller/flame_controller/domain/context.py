"""What every domain function gets besides the caller: the store and a few collaborators."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

from flame_controller.domain.stored_metrics import StoredMetrics
from flame_controller.store.base import Store
from flame_controller.tracking_accounts import TrackingAccounts
from flame_spec.pki import Authority


def _no_kick(job_id: str) -> None:
    del job_id


class KeyedLocks:
    """One :class:`asyncio.Lock` per key, forgotten once nobody holds or awaits it."""

    def __init__(self) -> None:
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    def __call__(self, key: str) -> asyncio.Lock:
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        return lock


@dataclass(frozen=True)
class Ctx:
    """``kick(job_id)`` wakes the reconciler after a change it must act on (start, stop, a task
    status report); ``apiserver_url`` goes into task configs for control-plane discovery and
    ``tracking_uri`` as the MLflow server jobs log to; ``job_lock(job_id)`` serializes the
    requests that rewrite or start one job; ``data_plane_secret`` keys the tasks' messages."""

    store: Store
    apiserver_url: str | None = None
    tracking_uri: str | None = None
    kick: Callable[[str], None] = _no_kick
    job_lock: KeyedLocks = field(default_factory=KeyedLocks)
    # what tasks' data-plane keys derive from (flame_spec.signing); None: configs go unsigned
    data_plane_secret: bytes | None = field(default=None, repr=False)
    # with the secret: each task also gets a certificate for TLS between peers (flame_spec.pki)
    data_plane_tls: bool = True
    # the CA of the control plane's certificates, which tasks check the apiserver against
    trusted_ca: bytes | None = None
    # the tracking server's accounts (None: it has none); the tracking URIs a job may name
    tracking_accounts: TrackingAccounts | None = None
    tracking_uris: frozenset[str] = frozenset()
    # health samples kept per node (the newest; flamelets report one every 15 s by default)
    node_health_keep: int = 240
    # what each task has reported, read incrementally (report_metrics keeps the first value)
    stored_metrics: StoredMetrics = field(default_factory=StoredMetrics)

    @cached_property
    def data_plane_ca(self) -> Authority | None:
        if self.data_plane_secret is None:
            return None
        return Authority.derived(self.data_plane_secret, "Flame data-plane CA")
