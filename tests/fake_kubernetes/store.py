"""The fake API server's state: objects, resource versions, watch history, garbage collection.

Everything runs on the fake's one event loop, so no locks are needed. Semantics follow the real
API server where the deployer depends on them:

* every write bumps one cluster-wide ``resourceVersion`` and is recorded in the history that
  watches replay; :meth:`Store.compact` forgets the history, after which a watch from an older
  version gets ``410 Gone`` (reason ``Expired``), as after an etcd compaction;
* ``create`` of an existing name is ``409 AlreadyExists``; an update with a stale
  ``resourceVersion`` is ``409 Conflict``;
* deletion honours ``propagationPolicy`` (``Background``, ``Foreground``, ``Orphan``; Jobs default
  to ``Orphan`` as on a real server) and the garbage collector deletes an object once every owner
  in its ``ownerReferences`` is gone; pods are deleted gracefully (the kubelet ends them first).
"""

from __future__ import annotations

import asyncio
import copy
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

Obj = dict[str, Any]


class ApiError(Exception):
    """An error the fake answers with a ``Status`` object."""

    def __init__(self, code: int, reason: str, message: str, details: Obj | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message
        self.details = details or {}

    def status(self) -> Obj:
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "details": self.details,
            "code": self.code,
        }


@dataclass(frozen=True)
class Kind:
    group: str  # "" for core
    version: str
    plural: str
    kind: str
    default_propagation: str = "Background"

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


KINDS = {
    "jobs": Kind("batch", "v1", "jobs", "Job", default_propagation="Orphan"),
    "pods": Kind("", "v1", "pods", "Pod"),
    "secrets": Kind("", "v1", "secrets", "Secret"),
    "configmaps": Kind("", "v1", "configmaps", "ConfigMap"),
    "leases": Kind("coordination.k8s.io", "v1", "leases", "Lease"),
}

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def invalid(kind: str, name: str, message: str) -> ApiError:
    return ApiError(
        422, "Invalid", f'{kind} "{name}" is invalid: {message}', {"name": name, "kind": kind}
    )


def check_labels(kind: str, name: str, labels: Obj) -> None:
    for key, value in (labels or {}).items():
        prefix, _, label = str(key).rpartition("/")
        if (prefix and not DNS_SUBDOMAIN.match(prefix)) or not LABEL_NAME.match(label):
            raise invalid(kind, name, f"metadata.labels: Invalid value: {key!r}")
        if len(label) > 63 or not isinstance(value, str) or len(value) > 63:
            raise invalid(kind, name, f"metadata.labels: Invalid value: {value!r}")
        if not LABEL_VALUE.match(value):
            raise invalid(kind, name, f"metadata.labels: Invalid value: {value!r}")


def matches(selector: list[tuple[str, str, str | None]], labels: Obj | None) -> bool:
    labels = labels or {}
    for key, op, value in selector:
        have = labels.get(key)
        if op == "exists" and key not in labels:
            return False
        if op == "=" and have != value:
            return False
        if op == "!=" and have == value:
            return False
    return True


def parse_selector(text: str | None) -> list[tuple[str, str, str | None]]:
    """Equality-based label selectors: ``a=b,c==d,e!=f,g``."""
    out: list[tuple[str, str, str | None]] = []
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        if "!=" in part:
            k, v = part.split("!=", 1)
            out.append((k.strip(), "!=", v.strip()))
        elif "==" in part:
            k, v = part.split("==", 1)
            out.append((k.strip(), "=", v.strip()))
        elif "=" in part:
            k, v = part.split("=", 1)
            out.append((k.strip(), "=", v.strip()))
        else:
            out.append((part, "exists", None))
    return out


@dataclass
class Event:
    version: int
    plural: str
    namespace: str
    type: str  # ADDED | MODIFIED | DELETED
    obj: Obj


@dataclass(eq=False)
class Watcher:
    plural: str
    namespace: str
    selector: list[tuple[str, str, str | None]]
    queue: asyncio.Queue[Event | None] = field(default_factory=asyncio.Queue)
    held: bool = False  # a stalled connection: events are not delivered

    def wants(self, event: Event) -> bool:
        return (
            event.plural == self.plural
            and event.namespace == self.namespace
            and matches(self.selector, event.obj.get("metadata", {}).get("labels"))
        )


Listener = Callable[[Event], None]


class Store:
    def __init__(self) -> None:
        self.version = 1
        self.compacted = 0  # watches from a version below this get 410 Gone
        self.objects: dict[tuple[str, str, str], Obj] = {}
        self.history: list[Event] = []
        self.watchers: set[Watcher] = set()
        self.listeners: list[Listener] = []  # the fake's controllers (job controller, kubelet)
        self.deleting_pod: Callable[[Obj, int], None] | None = None  # the kubelet

    # -- reads -----------------------------------------------------------------------------
    def get(self, plural: str, namespace: str, name: str) -> Obj:
        obj = self.objects.get((plural, namespace, name))
        if obj is None:
            kind = KINDS[plural]
            raise ApiError(
                404,
                "NotFound",
                f'{plural}{"." + kind.group if kind.group else ""} "{name}" not found',
                {"name": name, "kind": plural},
            )
        return copy.deepcopy(obj)

    def find(self, plural: str, namespace: str, name: str) -> Obj | None:
        return self.objects.get((plural, namespace, name))

    def list(self, plural: str, namespace: str, selector: str | None = None) -> list[Obj]:
        sel = parse_selector(selector)
        return [
            copy.deepcopy(o)
            for (p, ns, _), o in sorted(self.objects.items())
            if p == plural and ns == namespace and matches(sel, o["metadata"].get("labels"))
        ]

    def by_uid(self, uid: str) -> Obj | None:
        for obj in self.objects.values():
            if obj["metadata"].get("uid") == uid:
                return obj
        return None

    # -- writes ----------------------------------------------------------------------------
    def _emit(self, plural: str, namespace: str, kind: str, obj: Obj) -> None:
        event = Event(self.version, plural, namespace, kind, copy.deepcopy(obj))
        self.history.append(event)
        for w in list(self.watchers):
            if w.wants(event) and not w.held:
                w.queue.put_nowait(event)
        for listener in list(self.listeners):
            listener(event)

    def _bump(self, obj: Obj) -> None:
        self.version += 1
        obj["metadata"]["resourceVersion"] = str(self.version)

    def create(self, plural: str, namespace: str, obj: Obj) -> Obj:
        kind = KINDS[plural]
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        name = meta.get("name")
        if not name and meta.get("generateName"):
            name = meta["generateName"] + uuid.uuid4().hex[:5]
        if not name:
            raise invalid(kind.kind, "", "metadata.name: Required value")
        limit = 63 if plural == "jobs" else 253
        if len(name) > limit or not DNS_SUBDOMAIN.match(name):
            raise invalid(kind.kind, name, f"metadata.name: Invalid value: {name!r}")
        if meta.get("namespace", namespace) != namespace:
            raise ApiError(400, "BadRequest", "the namespace of the object does not match")
        if (plural, namespace, name) in self.objects:
            raise ApiError(
                409,
                "AlreadyExists",
                f'{plural} "{name}" already exists',
                {"name": name, "kind": plural},
            )
        check_labels(kind.kind, name, meta.get("labels") or {})
        for ref in meta.get("ownerReferences") or []:
            if not all(ref.get(k) for k in ("apiVersion", "kind", "name", "uid")):
                raise invalid(kind.kind, name, "metadata.ownerReferences: Required value")
        meta.update(
            name=name,
            namespace=namespace,
            uid=str(uuid.uuid4()),
            creationTimestamp=now_rfc3339(),
            generation=1,
        )
        obj["kind"], obj["apiVersion"] = kind.kind, kind.api_version
        self._bump(obj)
        self.objects[(plural, namespace, name)] = obj
        self._emit(plural, namespace, "ADDED", obj)
        return copy.deepcopy(obj)

    def replace(self, plural: str, namespace: str, name: str, obj: Obj) -> Obj:
        """PUT: a whole new object, refused when its resourceVersion is stale."""
        current = self.objects.get((plural, namespace, name))
        if current is None:
            self.get(plural, namespace, name)  # raises 404
            raise AssertionError
        want = (obj.get("metadata") or {}).get("resourceVersion")
        if want and want != current["metadata"]["resourceVersion"]:
            raise ApiError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {plural} "{name}": the object has been '
                "modified; please apply your changes to the latest version and try again",
                {"name": name, "kind": plural},
            )
        new = copy.deepcopy(obj)
        keep = {k: current["metadata"][k] for k in ("uid", "creationTimestamp", "namespace")}
        new.setdefault("metadata", {}).update(keep, name=name)
        new["kind"], new["apiVersion"] = current["kind"], current["apiVersion"]
        check_labels(current["kind"], name, new["metadata"].get("labels") or {})
        return self.put(plural, new)

    def put(self, plural: str, obj: Obj) -> Obj:
        """Store a modified object (the fake's controllers and PATCH use this)."""
        meta = obj["metadata"]
        self._bump(obj)
        self.objects[(plural, meta["namespace"], meta["name"])] = obj
        self._emit(plural, meta["namespace"], "MODIFIED", obj)
        return copy.deepcopy(obj)

    def delete(
        self,
        plural: str,
        namespace: str,
        name: str,
        *,
        propagation: str | None = None,
        grace: int | None = None,
    ) -> Obj:
        obj = self.objects.get((plural, namespace, name))
        if obj is None:
            self.get(plural, namespace, name)  # raises 404
            raise AssertionError
        propagation = propagation or KINDS[plural].default_propagation
        meta = obj["metadata"]
        if propagation == "Orphan":
            for dep in self._dependents(meta["uid"]):
                refs = dep["metadata"]["ownerReferences"]
                dep["metadata"]["ownerReferences"] = [r for r in refs if r["uid"] != meta["uid"]]
                self.put(_plural(dep), dep)
        if propagation == "Foreground" and self._dependents(meta["uid"]):
            if not meta.get("deletionTimestamp"):
                meta["deletionTimestamp"] = now_rfc3339()
                meta.setdefault("finalizers", []).append("foregroundDeletion")
                self.put(plural, obj)
                for dep in self._dependents(meta["uid"]):
                    d = dep["metadata"]
                    self.delete(_plural(dep), d["namespace"], d["name"], propagation="Foreground")
            return copy.deepcopy(obj)
        if plural == "pods" and self.deleting_pod is not None:
            if not meta.get("deletionTimestamp"):
                grace = (
                    grace
                    if grace is not None
                    else obj["spec"].get("terminationGracePeriodSeconds", 30)
                )
                meta["deletionTimestamp"] = now_rfc3339()
                meta["deletionGracePeriodSeconds"] = grace
                self.put(plural, obj)
                self.deleting_pod(obj, int(grace or 0))  # the kubelet removes it when ended
            return copy.deepcopy(obj)
        return self.remove(plural, namespace, name)

    def remove(self, plural: str, namespace: str, name: str) -> Obj:
        """The object is gone (for pods: the kubelet has ended it). Then collect garbage."""
        obj = self.objects.pop((plural, namespace, name), None)
        if obj is None:
            return {}
        self._bump(obj)
        self._emit(plural, namespace, "DELETED", obj)
        self._collect(obj["metadata"]["uid"])
        for owner_uid in [r["uid"] for r in obj["metadata"].get("ownerReferences") or []]:
            owner = self.by_uid(owner_uid)  # a foreground owner waiting for its dependents
            waiting = owner is not None and "foregroundDeletion" in (
                owner["metadata"].get("finalizers") or []
            )
            if owner is not None and waiting and not self._dependents(owner_uid):
                m = owner["metadata"]
                self.remove(_plural(owner), m["namespace"], m["name"])
        return copy.deepcopy(obj)

    def _dependents(self, uid: str) -> list[Obj]:
        return [
            o
            for o in list(self.objects.values())
            if any(r.get("uid") == uid for r in o["metadata"].get("ownerReferences") or [])
        ]

    def _collect(self, uid: str) -> None:
        """Delete (background) every object whose owners are now all gone."""
        for dep in self._dependents(uid):
            owners = [r["uid"] for r in dep["metadata"].get("ownerReferences") or []]
            if all(self.by_uid(o) is None for o in owners):
                m = dep["metadata"]
                if (_plural(dep), m["namespace"], m["name"]) in self.objects:
                    self.delete(_plural(dep), m["namespace"], m["name"], propagation="Background")

    # -- watches -----------------------------------------------------------------------------
    def compact(self) -> int:
        """Forget the history: watches from an older version now get 410 Gone."""
        self.history.clear()
        self.compacted = self.version
        return self.compacted

    def expire_watches(self) -> int:
        """End every open watch (as when the server's watch times out); returns how many."""
        n = len(self.watchers)
        for w in list(self.watchers):
            w.queue.put_nowait(None)
        return n

    def hold_watches(self, held: bool = True) -> None:
        """Stall the open watches: they stay connected and receive nothing."""
        for w in self.watchers:
            w.held = held


def _plural(obj: Obj) -> str:
    for plural, kind in KINDS.items():
        if kind.kind == obj.get("kind"):
            return plural
    raise KeyError(obj.get("kind"))
