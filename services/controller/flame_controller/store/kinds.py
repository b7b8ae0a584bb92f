"""What each stored collection looks like: its record model, key, unique and indexed fields."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flame_controller.store.records import (
    AuditRecord,
    CodeRecord,
    DatasetRecord,
    DesignRecord,
    IdempotencyRecord,
    InvitationRecord,
    JobRecord,
    LogLineRecord,
    MetricRecord,
    NodeHealthRecord,
    NodeRecord,
    ProjectRecord,
    Record,
    TaskRecord,
    TokenRecord,
    UserRecord,
)


def _by_id(doc: dict[str, Any]) -> str:
    return str(doc["id"])


def code_key(design_id: str, version: int) -> str:
    return f"{design_id}:{version:010d}"


def log_key(job_id: str, seq: int) -> str:
    return f"{job_id}:{seq:012d}"


@dataclass(frozen=True)
class Kind:
    name: str  # table / collection name
    model: type[Record]
    columns: tuple[str, ...]  # fields that filters and orders may use (indexed where useful)
    key: Callable[[dict[str, Any]], str] = _by_id
    unique: tuple[tuple[str, ...], ...] = ()  # unique field groups besides the key
    indexes: tuple[tuple[str, ...], ...] = ()  # non-unique indexes
    immutable: frozenset[str] = frozenset({"id", "created_at"})
    versioned: bool = False  # has a ``version`` the store bumps on every update
    hidden: tuple[str, ...] = field(default=())  # internal fields stripped before decoding


_OWNED = ("owner", "name", "project_id", "created_at")
_OWNED_INDEXES = (("project_id",), ("created_at",))

USERS = Kind(
    "users", UserRecord, ("name", "created_at"), unique=(("name",),), indexes=(("created_at",),)
)
TOKENS = Kind(
    "tokens",
    TokenRecord,
    ("token_hash", "subject", "kind", "created_at"),
    unique=(("token_hash",),),
    indexes=(("subject",), ("created_at",)),
)
PROJECTS = Kind(
    "projects",
    ProjectRecord,
    ("owner", "name", "created_at"),
    unique=(("owner", "name"),),
    indexes=(("created_at",),),
)
INVITATIONS = Kind(
    "invitations",
    InvitationRecord,
    ("token_hash", "project_id", "created_at", "version"),
    unique=(("token_hash",),),
    indexes=(("project_id",), ("created_at",)),
    immutable=frozenset({"id", "project_id", "owner", "token_hash", "created_at", "version"}),
    versioned=True,
)
NODES = Kind("nodes", NodeRecord, _OWNED, unique=(("owner", "name"),), indexes=_OWNED_INDEXES)
DATASETS = Kind(
    "datasets",
    DatasetRecord,
    (*_OWNED, "node_id"),
    unique=(("owner", "name"),),
    indexes=(*_OWNED_INDEXES, ("node_id",)),
)
DESIGNS = Kind("designs", DesignRecord, _OWNED, unique=(("owner", "name"),), indexes=_OWNED_INDEXES)
CODE = Kind(
    "code",
    CodeRecord,
    ("design_id", "version", "created_at"),
    key=lambda doc: code_key(doc["design_id"], doc["version"]),
    indexes=(("design_id", "version"),),
    immutable=frozenset({"design_id", "version", "created_at"}),
)
JOBS = Kind(
    "jobs",
    JobRecord,
    (*_OWNED, "design_id", "state", "next_check_at", "version"),
    unique=(("owner", "name"),),
    indexes=(*_OWNED_INDEXES, ("design_id",), ("state",), ("next_check_at",)),
    immutable=frozenset({"id", "created_at", "version", "transitions"}),
    versioned=True,
)
TASKS = Kind(
    "tasks",
    TaskRecord,
    ("job_id", "node_id", "state", "role", "index", "version"),
    indexes=(("job_id", "role", "index"), ("node_id",), ("state",)),
    immutable=frozenset({"id", "job_id", "created_at", "version", "transitions"}),
    versioned=True,
)
LOGS = Kind(
    "logs",
    LogLineRecord,
    ("job_id", "task_id", "seq", "source", "node_id", "level", "g", "mark", "stream"),
    key=lambda doc: log_key(doc["job_id"], doc["seq"]),
    indexes=(("job_id", "seq"), ("g",)),
    hidden=("g",),  # the store-wide append order, for the total retention cap
)
METRICS = Kind(
    "metrics",
    MetricRecord,
    ("job_id", "task_id", "key", "n"),
    key=lambda doc: log_key(doc["job_id"], doc["n"]),
    indexes=(("job_id", "n"),),
    hidden=("n",),
)
NODE_HEALTH = Kind(
    "node_health",
    NodeHealthRecord,
    ("node_id", "n"),
    key=lambda doc: log_key(doc["node_id"], doc["n"]),
    indexes=(("node_id", "n"),),
    hidden=("n",),
)

AUDIT = Kind(
    "audit",
    AuditRecord,
    ("actor", "action", "created_at"),
    indexes=(("created_at",), ("actor",)),
)

IDEMPOTENCY = Kind(
    "idempotency",
    IdempotencyRecord,
    ("expires_at",),
    indexes=(("expires_at",),),
)

ALL_KINDS: tuple[Kind, ...] = (
    USERS,
    TOKENS,
    PROJECTS,
    NODES,
    DATASETS,
    DESIGNS,
    CODE,
    JOBS,
    TASKS,
    LOGS,
    METRICS,
    NODE_HEALTH,
    AUDIT,
    IDEMPOTENCY,
    INVITATIONS,
)
