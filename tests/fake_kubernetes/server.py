"""The fake API server's HTTP surface: the REST paths of batch/v1 Jobs, core/v1 Pods (and their
logs), Secrets, ConfigMaps and coordination.k8s.io/v1 Leases, namespaced, as JSON.

``GET`` on a collection lists (``labelSelector``; the list's ``metadata.resourceVersion``) or,
with ``watch=true``, streams newline-delimited watch events from ``resourceVersion`` (replayed
from the history; ``410 Gone`` as an ``ERROR`` event when the version has been compacted),
ending after ``timeoutSeconds``. Writes: ``POST`` (create), ``PUT`` (replace, optimistic
concurrency), ``PATCH`` (merge and strategic-merge patches, as JSON merge patches), ``DELETE``
(``propagationPolicy``, ``gracePeriodSeconds`` in a ``DeleteOptions`` body or the query).
Every request needs the bearer token. Errors are ``Status`` objects with the real reasons.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import copy
import json
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from .kubelet import Kubelet, parse_rfc3339
from .store import KINDS, ApiError, Obj, Store, Watcher, invalid, parse_selector

SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
MAX_SECRET_BYTES = 1024 * 1024


@dataclass
class Audit:
    """What the fake was asked (tests assert on it)."""

    entries: list[tuple[str, str, dict[str, str], int]] = field(default_factory=list)

    def add(self, method: str, path: str, query: dict[str, str], status: int) -> None:
        self.entries.append((method, path, query, status))

    def count(self, method: str, path_re: str, **query: str) -> int:
        pattern = re.compile(path_re)
        return sum(
            1
            for m, p, q, _ in self.entries
            if m == method and pattern.search(p) and all(q.get(k) == v for k, v in query.items())
        )


def _check_create(plural: str, obj: Obj) -> None:
    name = obj.get("metadata", {}).get("name", "")
    if plural == "secrets":
        total = 0
        for key, value in (obj.get("data") or {}).items():
            if not SECRET_KEY.match(key) or len(key) > 253:
                raise invalid("Secret", name, f"data[{key}]: Invalid value: {key!r}")
            try:
                total += len(base64.b64decode(value, validate=True))
            except (binascii.Error, ValueError) as exc:
                raise invalid("Secret", name, f"data[{key}]: not base64") from exc
        if total > MAX_SECRET_BYTES:
            raise invalid(
                "Secret", name, f"data: Too long: must have at most {MAX_SECRET_BYTES} bytes"
            )
    if plural == "jobs":
        spec = (obj.get("spec") or {}).get("template", {}).get("spec")
        if not spec or not spec.get("containers"):
            raise invalid("Job", name, "spec.template.spec.containers: Required value")
        if spec.get("restartPolicy") not in ("Never", "OnFailure"):
            raise invalid("Job", name, "spec.template.spec.restartPolicy: Unsupported value")
        volumes = {v["name"] for v in spec.get("volumes") or []}
        for container in spec["containers"]:
            for mount in container.get("volumeMounts") or []:
                if mount["name"] not in volumes:
                    raise invalid("Job", name, f"volumeMounts.name: Not found: {mount['name']!r}")
        for volume in spec.get("volumes") or []:
            for item in (volume.get("secret") or {}).get("items") or []:
                if item["path"].startswith("/") or ".." in item["path"].split("/"):
                    raise invalid("Job", name, f"items.path: Invalid value: {item['path']!r}")


def _flag(value: str | None) -> bool:
    """A boolean query parameter as the API server parses it (Go's strconv.ParseBool)."""
    return (value or "").lower() in ("1", "t", "true")


def _merge(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = _merge(out.get(key), value)
    return out


def _check_patch(plural: str, before: Obj, after: Obj) -> None:
    name = before["metadata"]["name"]
    kind = before["kind"]
    if before.get("immutable") and (
        before.get("data") != after.get("data") or not after.get("immutable")
    ):
        raise invalid(kind, name, "data: Forbidden: field is immutable when `immutable` is set")
    if plural == "pods":
        b, a = dict(before["spec"]), dict(after["spec"])
        old, new = b.pop("activeDeadlineSeconds", None), a.pop("activeDeadlineSeconds", None)
        if a != b:
            raise invalid(
                kind,
                name,
                "spec: Forbidden: pod updates may not change fields other than "
                "activeDeadlineSeconds",
            )
        if new is not None and (new <= 0 or (old is not None and new > old)):
            raise invalid(
                kind,
                name,
                "spec.activeDeadlineSeconds: Invalid value: must be positive and may only decrease",
            )
    if plural == "jobs":
        b, a = dict(before["spec"]), dict(after["spec"])
        for mutable in ("suspend", "activeDeadlineSeconds", "parallelism"):
            b.pop(mutable, None)
            a.pop(mutable, None)
        if a != b:
            raise invalid(kind, name, "spec: field is immutable")


class Api:
    def __init__(
        self,
        store: Store,
        kubelet: Kubelet,
        token: str,
        rbac: dict[tuple[str, str], frozenset[str]] | None = None,
    ) -> None:
        self.rbac = rbac  # (group, resource) -> verbs the client may use; None: anything
        self.store = store
        self.kubelet = kubelet
        self.token = token
        self.audit = Audit()
        self.expired = 0  # watches answered 410 Gone
        self.closing = False
        routes = []
        for prefix in ("/api/{version}", "/apis/{group}/{version}"):
            base = prefix + "/namespaces/{namespace}/{plural}"
            routes += [
                Route(base, self.collection, methods=["GET", "POST"]),
                Route(base + "/{name}", self.item, methods=["GET", "PUT", "PATCH", "DELETE"]),
                Route(base + "/{name}/log", self.log, methods=["GET"]),
            ]
        self.app = Starlette(routes=routes)

    # -- plumbing --------------------------------------------------------------------------
    async def _handle(self, request: Request, fn: Callable[[], Any]) -> Response:
        query = dict(request.query_params)
        status = 200
        try:
            if request.headers.get("authorization") != f"Bearer {self.token}":
                raise ApiError(401, "Unauthorized", "Unauthorized")
            p = request.path_params
            kind = KINDS.get(p["plural"])
            if kind is None or kind.group != p.get("group", "") or kind.version != p["version"]:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            self._authorize(request, kind.group, p["plural"])
            result = await fn()
            if isinstance(result, Response):
                status = result.status_code
                return result
            status = 201 if request.method == "POST" else 200
            return JSONResponse(result, status_code=status)
        except ApiError as exc:
            status = exc.code
            return JSONResponse(exc.status(), status_code=exc.code)
        finally:
            self.audit.add(request.method, request.url.path, query, status)

    def _authorize(self, request: Request, group: str, plural: str) -> None:
        """RBAC as a Role would grant it: the verb of this request on (group, resource)."""
        if self.rbac is None:
            return
        path = request.url.path
        item = "name" in request.path_params
        resource = f"{plural}/log" if path.endswith("/log") else plural
        verb = {
            "POST": "create",
            "PUT": "update",
            "PATCH": "patch",
            "DELETE": "delete",
        }.get(request.method)
        if verb is None:  # GET
            if item:
                verb = "get"
            else:
                verb = "watch" if _flag(request.query_params.get("watch")) else "list"
        if verb not in self.rbac.get((group, resource), frozenset()):
            raise ApiError(
                403,
                "Forbidden",
                f'{resource} is forbidden: User "tester" cannot {verb} resource "{resource}" '
                f'in API group "{group}" in the namespace "{request.path_params["namespace"]}"',
            )

    # -- collection ------------------------------------------------------------------------
    async def collection(self, request: Request) -> Response:
        p = request.path_params
        plural, ns = p["plural"], p["namespace"]

        async def run() -> Any:
            if request.method == "POST":
                obj = await request.json()
                _check_create(plural, obj)
                return self.store.create(plural, ns, obj)
            q = request.query_params
            if _flag(q.get("watch")):
                return self._watch(plural, ns, q)
            items = self.store.list(plural, ns, q.get("labelSelector"))
            kind = KINDS[plural]
            return {
                "kind": f"{kind.kind}List",
                "apiVersion": kind.api_version,
                "metadata": {"resourceVersion": str(self.store.version)},
                "items": items,
            }

        return await self._handle(request, run)

    def _watch(self, plural: str, ns: str, q: Any) -> Response:
        since = q.get("resourceVersion") or ""
        timeout = float(q.get("timeoutSeconds") or 1800)
        selector = parse_selector(q.get("labelSelector"))
        watcher = Watcher(plural, ns, selector)
        backlog: list[Obj] = []
        if since in ("", "0"):
            for obj in self.store.list(plural, ns, q.get("labelSelector")):
                backlog.append({"type": "ADDED", "object": obj})
        elif int(since) < self.store.compacted:
            gone = ApiError(
                410,
                "Expired",
                f"too old resource version: {since} ({self.store.compacted})",
            ).status()
            backlog.append({"type": "ERROR", "object": gone})
            self.expired += 1
            watcher = None  # type: ignore[assignment]
        else:
            for event in self.store.history:
                if event.version > int(since) and watcher.wants(event):
                    backlog.append({"type": event.type, "object": event.obj})
        if watcher is not None:
            self.store.watchers.add(watcher)

        async def stream() -> AsyncIterator[bytes]:
            try:
                for item in backlog:
                    yield (json.dumps(item) + "\n").encode()
                if watcher is None:
                    return
                end = time.monotonic() + timeout
                while not self.closing:
                    left = end - time.monotonic()
                    if left <= 0:
                        return
                    try:
                        event = await asyncio.wait_for(watcher.queue.get(), timeout=min(left, 0.5))
                    except TimeoutError:
                        continue
                    if event is None:
                        return
                    yield (json.dumps({"type": event.type, "object": event.obj}) + "\n").encode()
            finally:
                if watcher is not None:
                    self.store.watchers.discard(watcher)

        return StreamingResponse(stream(), media_type="application/json")

    # -- one object ------------------------------------------------------------------------
    async def item(self, request: Request) -> Response:
        p = request.path_params
        plural, ns, name = p["plural"], p["namespace"], p["name"]

        async def run() -> Any:
            if request.method == "GET":
                return self.store.get(plural, ns, name)
            if request.method == "PUT":
                return self.store.replace(plural, ns, name, await request.json())
            if request.method == "PATCH":
                ctype = request.headers.get("content-type", "")
                if "merge-patch" not in ctype:
                    raise ApiError(415, "UnsupportedMediaType", f"fake: {ctype} not supported")
                current = self.store.get(plural, ns, name)
                patched = _merge(current, await request.json())
                patched["metadata"].update(
                    {k: current["metadata"][k] for k in ("name", "namespace", "uid")}
                )
                _check_patch(plural, current, patched)
                return self.store.put(plural, patched)
            body = await request.body()
            options = json.loads(body) if body else {}
            q = request.query_params
            propagation = options.get("propagationPolicy") or q.get("propagationPolicy")
            grace = options.get("gracePeriodSeconds", q.get("gracePeriodSeconds"))
            return self.store.delete(
                plural,
                ns,
                name,
                propagation=propagation,
                grace=int(grace) if grace is not None else None,
            )

        return await self._handle(request, run)

    async def log(self, request: Request) -> Response:
        p = request.path_params
        ns, name = p["namespace"], p["name"]

        async def run() -> Any:
            if p["plural"] != "pods":
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            pod = self.store.get("pods", ns, name)
            q = request.query_params
            container = q.get("container") or pod["spec"]["containers"][0]["name"]
            if container != pod["spec"]["containers"][0]["name"]:
                raise ApiError(
                    400, "BadRequest", f"container {container} is not valid for pod {name}"
                )
            if _flag(q.get("follow")):
                raise ApiError(400, "BadRequest", "fake: follow is not supported")
            if not self.kubelet.started(ns, name):
                raise ApiError(
                    400,
                    "BadRequest",
                    f'container "{container}" in pod "{name}" is waiting to start: '
                    "ContainerCreating",
                )
            since_ns = None
            if q.get("sinceTime"):
                since_ns = parse_rfc3339(q["sinceTime"])
            elif q.get("sinceSeconds"):
                since_ns = time.time_ns() - int(q["sinceSeconds"]) * 10**9
            text = self.kubelet.log(
                ns,
                name,
                timestamps=_flag(q.get("timestamps")),
                since_ns=since_ns,
                tail=int(q["tailLines"]) if q.get("tailLines") else None,
                limit_bytes=int(q["limitBytes"]) if q.get("limitBytes") else None,
            )
            return PlainTextResponse(text)

        return await self._handle(request, run)
