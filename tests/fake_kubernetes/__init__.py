"""A fake Kubernetes API server on loopback, for the Kubernetes deployer's tests.

A real HTTP server (uvicorn, in a thread with its own event loop) answering exactly the calls the
deployer and the leader election make (:mod:`.server`), over a small in-memory cluster
(:mod:`.store`) with a Job controller and a kubelet that runs every pod's container command as a
local process (:mod:`.kubelet`). The official ``kubernetes`` client talks to it through an
ordinary kubeconfig (server URL and bearer token) as it would to a real API server::

    with FakeKubernetes(tmp_path, images={"flame/task-runner:test": {"python": sys.executable}})
        as fake:
        kubeconfig = fake.kubeconfig(tmp_path / "kubeconfig")
        ...
        fake.compact(); fake.expire_watches()    # the next watch from an old version: 410 Gone

With ``rbac`` it answers 403 Forbidden to any verb on any resource a Role with those rules
would not allow (tests give it exactly what the chart grants).

What it does not do: scheduling (every pod lands on one "node" at once), admission, user
ids (processes run as the test's user), container images (``images`` maps an image to the local
programs its command names), networking (pods share the host's loopback), and its state lives
in memory.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
import threading
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import uvicorn

from .kubelet import JobController, Kubelet, PodRecord
from .server import Api
from .store import Obj, Store

T = TypeVar("T")

__all__ = ["FakeKubernetes", "PodRecord"]


class FakeKubernetes:
    def __init__(
        self,
        root: Path,
        *,
        images: dict[str, dict[str, str]] | None = None,
        rbac: dict[tuple[str, str], frozenset[str]] | None = None,
    ) -> None:
        self.root = Path(root)
        self.images = images or {}
        self.rbac = rbac  # as a Role grants: (group, resource) -> verbs; None: no checks
        self.token = secrets.token_urlsafe(24)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="fake-k8s", daemon=True)
        self._server: uvicorn.Server | None = None
        self._serving: Future[None] | None = None
        self.store: Store
        self.kubelet: Kubelet
        self.api: Api
        self.url = ""

    # -- life cycle --------------------------------------------------------------------------
    def start(self) -> FakeKubernetes:
        self._thread.start()
        self.call(self._build)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        config = uvicorn.Config(
            self.api.app,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=2,
        )
        self._server = uvicorn.Server(config)
        self._serving = asyncio.run_coroutine_threadsafe(
            self._server.serve(sockets=[sock]), self.loop
        )
        self._sock = sock
        while not self._server.started:
            if self._serving.done():
                self._serving.result()
            threading.Event().wait(0.01)
        return self

    def _build(self) -> None:
        self.store = Store()
        self.kubelet = Kubelet(self.store, self.root / "nodes" / "fake-node", self.images)
        JobController(self.store)
        self.api = Api(self.store, self.kubelet, self.token, self.rbac)

    def stop(self) -> None:
        if self._server is not None:
            self.api.closing = True
            self.call(self.store.expire_watches)
            self._server.should_exit = True
            if self._serving is not None:
                self._serving.result(30)
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self.kubelet.shutdown(), self.loop).result(30)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
        self._sock.close()

    def __enter__(self) -> FakeKubernetes:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- access ------------------------------------------------------------------------------
    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn`` on the fake's loop (its state is only touched there)."""

        async def run() -> T:
            return fn(*args)

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(30)

    def kubeconfig(self, path: Path, namespace: str = "default") -> Path:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "tester", "user": {"token": self.token}}],
            "contexts": [
                {
                    "name": "fake",
                    "context": {"cluster": "fake", "user": "tester", "namespace": namespace},
                }
            ],
            "current-context": "fake",
        }
        path.write_text(json.dumps(config))
        path.chmod(0o600)
        return path

    def objects(self, plural: str, namespace: str, selector: str | None = None) -> list[Obj]:
        return self.call(self.store.list, plural, namespace, selector)

    def get(self, plural: str, namespace: str, name: str) -> Obj | None:
        def find() -> Obj | None:
            found = self.store.find(plural, namespace, name)
            return json.loads(json.dumps(found)) if found is not None else None

        return self.call(find)

    def delete(
        self, plural: str, namespace: str, name: str, propagation: str = "Background"
    ) -> None:
        """As an operator would (``kubectl delete``)."""
        self.call(lambda: self.store.delete(plural, namespace, name, propagation=propagation))

    def compact(self) -> int:
        return self.call(self.store.compact)

    def expire_watches(self) -> int:
        return self.call(self.store.expire_watches)

    def hold_watches(self, held: bool = True) -> None:
        self.call(self.store.hold_watches, held)

    def open_watches(self) -> int:
        return self.call(lambda: len(self.store.watchers))

    def pods_run(self, namespace: str, **labels: str) -> list[PodRecord]:
        """Every pod the kubelet ran (also deleted ones) whose labels include ``labels``."""
        return self.call(
            lambda: [
                pod
                for pod in self.kubelet.history
                if pod.namespace == namespace
                and all(pod.labels.get(k) == v for k, v in labels.items())
            ]
        )

    def pod_dirs(self, namespace: str, **labels: str) -> list[Path]:
        """The folders of those pods (``volumes/<volume>/...``)."""
        return [pod.root for pod in self.pods_run(namespace, **labels)]
