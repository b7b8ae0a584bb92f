"""A cache of the deployer's Kubernetes Jobs, kept by list + watch (an informer).

One daemon thread lists the Jobs matching a label selector, remembers the list's
``resourceVersion`` and watches from there (``watch=true&resourceVersion=RV``, with bookmarks);
every event updates the cache and moves the version on. When the server ends a watch (its
``timeoutSeconds``) it watches again from the last version. When that version is too old
(``410 Gone``: the server has compacted its history) the events in between are lost, so it lists
again (a **resync**) and compares the new list with the cache. Any other error: back off, list
again.

``on_change(name, old, new)`` is called (from the thread) for every change the cache sees:
``new`` None means the Job is gone. The deployer uses it to wake the reconciler when a Job ends
or vanishes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import structlog
from kubernetes import client, watch

from ..kubeapi import ApiException, call

log = structlog.get_logger(__name__)

Job = dict[str, Any]
OnChange = Callable[[str, Job | None, Job | None], None]


class JobInformer:
    def __init__(
        self,
        api: client.ApiClient,
        namespace: str,
        selector: str,
        on_change: OnChange,
        *,
        timeout_seconds: int = 300,
        backoff_max: float = 10.0,
    ) -> None:
        self.batch = client.BatchV1Api(api)
        self.namespace = namespace
        self.selector = selector
        self.on_change = on_change
        self.timeout_seconds = timeout_seconds
        self.backoff_max = backoff_max
        self.resyncs = 0  # lists after the first (after an expiry or an error)
        self.expiries = 0  # watches the server answered with 410 Gone
        self._lists = 0
        self._cache: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._version: str | None = None
        self._healthy = threading.Event()  # the cache follows the server (listed or watching)
        self._stop = threading.Event()
        self._watch: watch.Watch | None = None
        self._thread: threading.Thread | None = None

    # -- reading ---------------------------------------------------------------------------
    @property
    def healthy(self) -> bool:
        return self._healthy.is_set()

    def get(self, name: str) -> Job | None:
        with self._lock:
            return self._cache.get(name)

    def wait_healthy(self, timeout: float) -> bool:
        return self._healthy.wait(timeout)

    # -- life cycle ------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="kubernetes-jobs", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        current = self._watch
        if current is not None:
            current.stop()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=10)

    # -- the loop ----------------------------------------------------------------------------
    def _run(self) -> None:
        pause = 0.2
        while not self._stop.is_set():
            try:
                if self._version is None:
                    self._list()
                self._watch_once()  # returns when the server ends the watch: watch again
                pause = 0.2
                continue
            except ApiException as exc:
                self._healthy.clear()
                if exc.status == 410:
                    self.expiries += 1
                    log.info("kubernetes.watch_expired", version=self._version)
                    self._version = None  # list again at once: a resync
                    continue
                log.warning("kubernetes.watch_failed", status=exc.status, reason=exc.reason)
                self._version = None
            except Exception as exc:  # transport errors: the API server restarts, the network
                self._healthy.clear()
                if self._stop.is_set():
                    break
                log.warning("kubernetes.watch_failed", error=f"{type(exc).__name__}: {exc}")
                self._version = None
            if self._stop.wait(pause):
                break
            pause = min(pause * 2, self.backoff_max)

    def _list(self) -> None:
        body = call(
            self.batch.list_namespaced_job,
            self.namespace,
            label_selector=self.selector,
            _request_timeout=60,
        )
        fresh = {item["metadata"]["name"]: item for item in body.get("items", [])}
        with self._lock:
            old, self._cache = self._cache, fresh
        self._version = body.get("metadata", {}).get("resourceVersion")
        self._lists += 1
        if self._lists > 1:
            self.resyncs += 1
            log.info("kubernetes.resync", jobs=len(fresh), version=self._version)
        self._healthy.set()
        for name in old.keys() | fresh.keys():
            before, after = old.get(name), fresh.get(name)
            if before is None or after is None or _version(before) != _version(after):
                self.on_change(name, before, after)

    def _watch_once(self) -> None:
        w = watch.Watch()
        self._watch = w
        try:
            stream = w.stream(
                self.batch.list_namespaced_job,
                self.namespace,
                label_selector=self.selector,
                resource_version=self._version,
                allow_watch_bookmarks=True,
                timeout_seconds=self.timeout_seconds,
                _request_timeout=(10, self.timeout_seconds + 30),
            )
            for event in stream:
                if self._stop.is_set():
                    break
                self._apply(event)
        finally:
            self._watch = None

    def _apply(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        obj = event.get("raw_object")  # the JSON as sent (``object`` is the client's model)
        if not isinstance(obj, dict):
            return
        meta = obj.get("metadata", {})
        version = meta.get("resourceVersion")
        if kind == "BOOKMARK":
            self._version = version or self._version
            return
        name = meta.get("name")
        if not name or kind not in ("ADDED", "MODIFIED", "DELETED"):
            return
        with self._lock:
            before = self._cache.get(name)
            after: Job | None
            if kind == "DELETED":
                self._cache.pop(name, None)
                after = None
            else:
                self._cache[name] = after = obj
        self._version = version or self._version
        self.on_change(name, before, after)


def _version(obj: Job) -> str | None:
    version: str | None = obj.get("metadata", {}).get("resourceVersion")
    return version
