"""The records the controller keeps in its store.

One frozen pydantic model per resource of ``proto/flame/v1/control.proto``.  Every timestamp is a
timezone-aware UTC ``datetime`` truncated to whole milliseconds (what MongoDB's BSON dates can
hold), so a record reads back from every backend exactly equal to what was written.  Naive
datetimes are rejected: use :func:`utcnow`.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

JobState = Literal[
    "ready",
    "starting",
    "deploying",
    "running",
    "stopping",
    "completed",
    "failed",
    "terminated",
]
JobDesiredState = Literal["ready", "running", "stopped"]
TaskState = Literal["pending", "scheduled", "running", "completed", "failed", "terminated"]
Presence = Literal["unknown", "online", "offline"]
TokenKind = Literal["api", "enrolment", "node", "task"]
TokenPermission = Literal["read", "write"]
ALL_PERMISSIONS: tuple[TokenPermission, ...] = ("read", "write")
TokenScope = Literal["admin", "user", "node"]
LogStream = Literal["stdout", "stderr", "agent", "service"]
# Where a log line comes from: a task's own output, or a service's events about the job
LogSource = Literal["task", "controller", "notifier", "apiserver"]
LOG_SOURCES: tuple[LogSource, ...] = ("task", "controller", "notifier", "apiserver")
# structlog's levels, lowest first; task output carries no level ("")
LOG_LEVELS: tuple[str, ...] = ("debug", "info", "warning", "error", "critical")

JOB_TERMINAL_STATES: frozenset[str] = frozenset({"completed", "failed", "terminated"})
TASK_TERMINAL_STATES: frozenset[str] = frozenset({"completed", "failed", "terminated"})


def _utc_ms(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("timestamps must be timezone-aware (UTC)")
    value = value.astimezone(UTC)
    return value.replace(microsecond=value.microsecond - value.microsecond % 1000)


UtcDatetime = Annotated[datetime, AfterValidator(_utc_ms)]
"""A timezone-aware UTC datetime, truncated to milliseconds."""


def utcnow() -> datetime:
    """The current time as the store keeps it (UTC, millisecond precision)."""
    return _utc_ms(datetime.now(UTC))


#: Where :func:`new_id` takes ids from while set: an idempotent create derives them from its
#: key, so a retry of an interrupted create makes the same records (see ``idempotency``).
ID_SOURCE: ContextVar[Callable[[], str] | None] = ContextVar("flame_id_source", default=None)


def new_id() -> str:
    """A fresh random id (32 lowercase hex characters), or the next id of :data:`ID_SOURCE`."""
    source = ID_SOURCE.get()
    return source() if source is not None else uuid.uuid4().hex


class Record(BaseModel):
    """Base of every stored record: frozen, strict about unknown fields."""

    model_config = ConfigDict(
        frozen=True, extra="forbid", validate_by_name=True, validate_by_alias=True
    )


class UserRecord(Record):
    id: str
    name: str  # unique
    email: str = ""
    admin: bool = False
    created_at: UtcDatetime = Field(default_factory=utcnow)


class TokenRecord(Record):
    """A bearer secret, stored hashed: user API token, enrolment token, node or task credential.

    ``subject`` is the user id (api), node id (enrolment, node) or task id (task).
    """

    id: str
    kind: TokenKind
    scope: TokenScope
    subject: str
    token_hash: str  # unique
    description: str = ""
    expires_at: UtcDatetime | None = None
    revoked: bool = False
    # what an API token may do: "read" (queries) and/or "write" (everything else)
    scopes: list[TokenPermission] = Field(default_factory=lambda: list(ALL_PERMISSIONS))
    created_at: UtcDatetime = Field(default_factory=utcnow)


class ProjectRecord(Record):
    id: str
    name: str  # unique per owner
    owner: str
    members: list[str] = Field(default_factory=list)  # user ids
    description: str = ""
    created_at: UtcDatetime = Field(default_factory=utcnow)


class InvitationRecord(Record):
    """A one-time link to join a project, stored by the sha256 of its secret.

    It is usable while ``used_by`` is empty, ``revoked`` is false and ``expires_at`` is in the
    future; redeeming it sets ``used_by`` with a compare-and-set on ``version``, so a link
    opened twice at once joins exactly one person."""

    id: str
    project_id: str
    owner: str  # who invited (the project's owner or an admin)
    token_hash: str  # unique
    note: str = ""  # free text the owner sees in the list (e.g. whom it was for)
    expires_at: UtcDatetime
    revoked: bool = False
    used_by: str = ""  # the user who joined with it
    used_at: UtcDatetime | None = None
    created_at: UtcDatetime = Field(default_factory=utcnow)
    version: int = 0


class NodeRecord(Record):
    id: str
    name: str  # unique per owner
    owner: str
    project_id: str = ""
    labels: dict[str, str] = Field(default_factory=dict)
    presence: Presence = "unknown"
    last_seen: UtcDatetime | None = None
    enrolled: bool = False
    revoked: bool = False
    facts: dict[str, Any] = Field(default_factory=dict)
    created_at: UtcDatetime = Field(default_factory=utcnow)


class GpuSample(Record):
    index: int = Field(ge=0)
    name: str = ""
    utilization_percent: float = Field(ge=0, le=100)
    memory_used_bytes: int = Field(ge=0)
    memory_total_bytes: int = Field(ge=0)


class NodeHealthRecord(Record):
    """One health sample a node's agent reported; the store keeps the last few per node."""

    node_id: str
    at: UtcDatetime
    cpu_percent: float = Field(ge=0, le=100)
    cpu_count: int = Field(default=0, ge=0)
    load1: float = Field(default=0.0, ge=0)
    memory_used_bytes: int = Field(ge=0)
    memory_total_bytes: int = Field(ge=0)
    disk_used_bytes: int = Field(ge=0)
    disk_total_bytes: int = Field(ge=0)
    net_sent_bytes: int = Field(default=0, ge=0)  # counters since the node booted
    net_recv_bytes: int = Field(default=0, ge=0)
    gpus: list[GpuSample] = Field(default_factory=list, max_length=64)


class DatasetRecord(Record):
    id: str
    name: str  # unique per owner
    owner: str
    project_id: str = ""
    node_id: str
    realm: str = ""
    format: str = ""
    size_bytes: int = 0
    num_samples: int = Field(default=0, ge=0)  # as the data owner registered it (0: unknown)
    uri: str = ""
    description: str = ""
    created_at: UtcDatetime = Field(default_factory=utcnow)


class DesignRecord(Record):
    """A job template.  ``schema_`` (alias ``schema``) is the normalized design schema."""

    id: str
    name: str  # unique per owner
    owner: str
    project_id: str = ""
    description: str = ""
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    version: int = 1
    created_at: UtcDatetime = Field(default_factory=utcnow)


class CodeRecord(Record):
    """One version of a design's code zip; the bytes live in the blob store under ``blob_key``.
    ``request_id`` tells a retried push (same ``Idempotency-Key``) the version it made."""

    design_id: str
    version: int = Field(ge=1)  # unique per design
    sha256: str
    size_bytes: int
    roles: list[str] = Field(default_factory=list)
    blob_key: str
    request_id: str = ""
    created_at: UtcDatetime = Field(default_factory=utcnow)


class TransitionRecord(Record):
    from_state: str
    to_state: str
    reason: str = ""
    at: UtcDatetime = Field(default_factory=utcnow)


class JobRecord(Record):
    id: str
    name: str  # unique per owner
    owner: str
    project_id: str = ""
    design_id: str
    code_version: int
    spec: dict[str, Any] = Field(default_factory=dict)
    state: JobState = "ready"
    desired_state: JobDesiredState = "ready"
    reason: str = ""
    transitions: list[TransitionRecord] = Field(default_factory=list)
    version: int = 0  # bumped by the store on every update
    created_at: UtcDatetime = Field(default_factory=utcnow)
    started_at: UtcDatetime | None = None
    deadline: UtcDatetime | None = None
    next_check_at: UtcDatetime | None = None
    # An update's new task set, written together with its spec in one step and cleared once the
    # tasks are stored; an update cut short is finished by the next update or start.
    replan: list[TaskRecord] | None = None

    @property
    def terminal(self) -> bool:
        return self.state in JOB_TERMINAL_STATES


class TaskRecord(Record):
    id: str  # deterministic: derived from (job id, role, index)
    job_id: str
    role: str
    index: int
    node_id: str | None = None  # None for roles run by a deployer
    dataset_id: str | None = None
    groups: dict[str, str] = Field(default_factory=dict)  # channel name -> group
    data_consumer: bool = False
    state: TaskState = "pending"
    reason: str = ""
    transitions: list[TransitionRecord] = Field(default_factory=list)
    version: int = 0  # bumped by the store on every update
    attempt: int = 0
    config: dict[str, Any] = Field(default_factory=dict)  # the task config JSON
    endpoint: str | None = None
    handle: str | None = None  # the deployer's handle of the running attempt (opaque)
    info: dict[str, Any] = Field(default_factory=dict)  # observed data: run/model URIs, ...
    created_at: UtcDatetime = Field(default_factory=utcnow)

    @model_validator(mode="before")
    @classmethod
    def _legacy(cls, data: Any) -> Any:
        """Records written before deployer handles kept a ``pid``; it is not needed now."""
        if isinstance(data, dict) and "pid" in data:
            data = {k: v for k, v in data.items() if k != "pid"}
        return data

    @property
    def terminal(self) -> bool:
        return self.state in TASK_TERMINAL_STATES


JobRecord.model_rebuild()  # ``replan`` refers to TaskRecord, defined after it


class LogLineRecord(Record):
    """One log line; ``seq`` is assigned by the store on append (strictly increasing per job).

    A task's output has ``source="task"``; a service's event about the job has the service as
    its source, ``stream="service"``, its level and the task and node it names (or "")."""

    job_id: str
    task_id: str
    stream: LogStream = "stdout"
    line: str
    at: UtcDatetime = Field(default_factory=utcnow)
    seq: int = 0
    source: LogSource = "task"
    node_id: str = ""
    level: str = ""
    mark: int = 0  # the shipper's position of a task line (see Store.last_log_mark)


class MetricRecord(Record):
    job_id: str
    task_id: str
    key: str
    value: float
    step: int = 0
    at: UtcDatetime = Field(default_factory=utcnow)


class IdempotencyRecord(Record):
    """What one ``Idempotency-Key`` did: the request it was first used for and, once that
    request succeeded, its response.

    ``id`` is a hash of (caller, call, key), so one caller's key can never reach another's
    record and the key itself is not stored. ``seed`` is the randomness the create drew its
    ids and secrets from (a retry re-derives the same ones); ``response`` is the serialized
    response without secrets (``""`` while the request has not completed); ``secret_field``,
    ``secret_index`` and ``secret_kind`` say which derived secret goes back into it."""

    id: str
    call: str
    fingerprint: str  # sha256 of the request
    seed: str
    response: str = ""  # base64 of the serialized response, secrets removed
    secret_field: str = ""  # the response field that held a secret ("": none)
    secret_index: int = -1
    secret_kind: str = ""
    created_at: UtcDatetime = Field(default_factory=utcnow)
    expires_at: UtcDatetime


class AuditRecord(Record):
    """One state-changing call: who, what, on which resource, when, and how it ended."""

    id: str
    actor_scope: str  # admin | user | node | service
    actor: str
    action: str  # the call, e.g. CreateJob
    target: str = ""
    outcome: str = "ok"  # or the error code
    detail: str = ""
    created_at: UtcDatetime = Field(default_factory=utcnow)
