"""REST bodies: snake_case pydantic models mirroring ``proto/flame/v1/control.proto``.

Response models convert from protobuf with ``from_pb``; design schemas and job specs are JSON
objects here (strings on the wire to the controller)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from google.protobuf.message import Message
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic_core import from_json

from flame_proto.v1 import common_pb2, control_pb2
from flame_service.timestamps import to_datetime
from flame_spec.types import EMAIL_PATTERN

T = TypeVar("T")
Presence = Literal["unknown", "online", "offline"]
_PRESENCE: dict[int, Presence] = {
    control_pb2.PRESENCE_ONLINE: "online",
    control_pb2.PRESENCE_OFFLINE: "offline",
}
INT64 = 2**53 - 1  # the largest integer every JSON parser reads exactly
INT32 = 2**31 - 1
MAX_TTL_SECONDS = 10 * 365 * 24 * 3600


def _integral(value: Any) -> Any:
    """JSON Schema counts 3.0 as an integer; strict mode would not, so convert it first."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# Non-negative integers (constraints before the validator, so OpenAPI gets minimum/maximum).
Int32 = Annotated[int, Field(ge=0, le=INT32), BeforeValidator(_integral)]
Int53 = Annotated[int, Field(ge=0, le=INT64), BeforeValidator(_integral)]
TtlSeconds = Annotated[int, Field(ge=0, le=MAX_TTL_SECONDS), BeforeValidator(_integral)]

# Field rules the controller enforces, published in the OpenAPI document so clients (and
# schemathesis) know them; the controller stays the authority and checks them again.
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", max_length=64)]
Ref = Annotated[str, Field(max_length=256)]  # an id (or empty)
Email = Annotated[str, Field(pattern=EMAIL_PATTERN, max_length=254)]
Description = Annotated[str, Field(max_length=2000)]
LabelKey = Annotated[str, Field(min_length=1, max_length=63)]
Labels = Annotated[dict[LabelKey, Annotated[str, Field(max_length=253)]], Field(max_length=64)]
Facts = Annotated[
    dict[Annotated[str, Field(max_length=63)], Annotated[str, Field(max_length=1024)]],
    Field(max_length=64),
]


def _ts(msg: Message, field: str) -> datetime | None:
    return to_datetime(getattr(msg, field)) if msg.HasField(field) else None


def _json_object(text: str) -> dict[str, Any]:
    """A stored JSON object (a job's spec, a design's schema): pydantic's parser, several
    times faster than ``json.loads`` (a page of 50 jobs parses 50 specs); the few texts it
    refuses and Python accepts (a lone surrogate escape) go to ``json.loads``."""
    if not text:
        return {}
    try:
        value = from_json(text)
    except ValueError:
        value = json.loads(text)
    return value if isinstance(value, dict) else {}


class Request(BaseModel):
    """Request bodies: strict JSON types (no coerced strings/booleans), unknown keys rejected."""

    model_config = ConfigDict(strict=True, extra="forbid")


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_page_token: str = ""


class Items(BaseModel, Generic[T]):
    items: list[T]


class WhoAmI(BaseModel):
    scope: Literal["admin", "user", "node"]
    subject: str
    read_only: bool = False


class Health(BaseModel):
    status: Literal["ok"]


# ---- users and tokens
class User(BaseModel):
    id: str
    name: str
    email: str
    admin: bool
    created_at: datetime | None

    @classmethod
    def from_pb(cls, m: control_pb2.User) -> User:
        return cls(
            id=m.id, name=m.name, email=m.email, admin=m.admin, created_at=_ts(m, "created_at")
        )


class CreateUser(Request):
    name: Name
    email: Email = ""
    admin: bool = False


class UpdateUser(Request):
    email: Email | None = None
    admin: bool | None = None


TokenScope = Literal["read", "write"]


def _all_scopes() -> list[TokenScope]:
    return ["read", "write"]


class CreateToken(Request):
    description: Annotated[str, Field(max_length=500)] = ""
    ttl_seconds: TtlSeconds = Field(0, description="0 = no expiry")
    scopes: list[TokenScope] = Field(
        default_factory=_all_scopes,
        max_length=2,
        description='"read": queries only; "write": changes too',
    )


class TokenSecret(BaseModel):
    id: str
    token: str
    user_id: str
    scopes: list[str]
    expires_at: datetime | None

    @classmethod
    def from_pb(cls, m: control_pb2.TokenSecret) -> TokenSecret:
        return cls(
            id=m.id,
            token=m.token,
            user_id=m.user_id,
            scopes=list(m.scopes),
            expires_at=_ts(m, "expires_at"),
        )


class SetModelAlias(BaseModel):
    """Which version of the model the alias points at."""

    version: str = Field(pattern=r"^[0-9]{1,18}$")


class ModelAlias(BaseModel):
    """``model@alias`` now loads ``version``."""

    model: str
    alias: str
    version: str

    @classmethod
    def from_pb(cls, m: control_pb2.ModelAlias) -> ModelAlias:
        return cls(model=m.model, alias=m.alias, version=m.version)


class TrackingCredentials(BaseModel):
    """The caller's login on the platform's MLflow server: it reads their jobs' runs and models."""

    uri: str
    username: str
    password: str

    @classmethod
    def from_pb(cls, m: control_pb2.TrackingCredentials) -> TrackingCredentials:
        return cls(uri=m.uri, username=m.username, password=m.password)


class TokenInfo(BaseModel):
    """An API token without its secret."""

    id: str
    user_id: str
    description: str
    scopes: list[str]
    created_at: datetime | None
    expires_at: datetime | None
    revoked: bool

    @classmethod
    def from_pb(cls, m: control_pb2.TokenInfo) -> TokenInfo:
        return cls(
            id=m.id,
            user_id=m.user_id,
            description=m.description,
            scopes=list(m.scopes),
            created_at=_ts(m, "created_at"),
            expires_at=_ts(m, "expires_at"),
            revoked=m.revoked,
        )


class AuditEntry(BaseModel):
    """One state-changing call: who, what, on which resource, when, how it ended."""

    id: str
    at: datetime | None
    actor_scope: str
    actor: str
    action: str
    target: str
    outcome: str
    detail: str

    @classmethod
    def from_pb(cls, m: control_pb2.AuditEntry) -> AuditEntry:
        return cls(
            id=m.id,
            at=_ts(m, "at"),
            actor_scope=m.actor_scope,
            actor=m.actor,
            action=m.action,
            target=m.target,
            outcome=m.outcome,
            detail=m.detail,
        )


# ---- projects
class Project(BaseModel):
    id: str
    name: str
    owner: str
    members: list[str]
    description: str
    created_at: datetime | None

    @classmethod
    def from_pb(cls, m: control_pb2.Project) -> Project:
        return cls(
            id=m.id,
            name=m.name,
            owner=m.owner,
            members=list(m.members),
            description=m.description,
            created_at=_ts(m, "created_at"),
        )


class CreateProject(Request):
    name: Name
    description: Description = ""


class UpdateProject(Request):
    description: Description | None = None


# ---- nodes
class Node(BaseModel):
    id: str
    name: str
    owner: str
    project_id: str
    labels: dict[str, str]
    presence: Presence
    last_seen: datetime | None
    enrolled: bool
    revoked: bool
    created_at: datetime | None

    @classmethod
    def from_pb(cls, m: control_pb2.Node) -> Node:
        return cls(
            id=m.id,
            name=m.name,
            owner=m.owner,
            project_id=m.project_id,
            labels=dict(m.labels),
            presence=_PRESENCE.get(m.presence, "unknown"),
            last_seen=_ts(m, "last_seen"),
            enrolled=m.enrolled,
            revoked=m.revoked,
            created_at=_ts(m, "created_at"),
        )


class GpuHealth(BaseModel):
    index: int = Field(ge=0, le=1024)
    name: str = Field(default="", max_length=256)
    utilization_percent: float = Field(ge=0, le=100)
    memory_used_bytes: int = Field(ge=0)
    memory_total_bytes: int = Field(ge=0)


class HealthMeasurements(BaseModel):
    cpu_percent: float = Field(ge=0, le=100)
    cpu_count: int = Field(default=0, ge=0, le=1_000_000)
    load1: float = Field(default=0.0, ge=0)
    memory_used_bytes: int = Field(ge=0)
    memory_total_bytes: int = Field(ge=0)
    disk_used_bytes: int = Field(ge=0)
    disk_total_bytes: int = Field(ge=0)
    net_sent_bytes: int = Field(default=0, ge=0)
    net_recv_bytes: int = Field(default=0, ge=0)
    gpus: list[GpuHealth] = Field(default_factory=list, max_length=64)

    def to_pb(self, **extra: Any) -> control_pb2.NodeHealthSample:
        fields = self.model_dump(exclude={"gpus", "node_id", "at"})
        gpus = [control_pb2.GpuHealth(**g.model_dump()) for g in self.gpus]
        return control_pb2.NodeHealthSample(gpus=gpus, **fields, **extra)


class ReportHealth(HealthMeasurements):
    """``POST /v1/agent/health``: what a node's agent measured (the node is its credential's)."""

    model_config = ConfigDict(strict=True, extra="forbid")


class NodeHealth(HealthMeasurements):
    node_id: str
    at: datetime | None

    @classmethod
    def from_pb(cls, m: control_pb2.NodeHealthSample) -> NodeHealth:
        return cls(
            node_id=m.node_id,
            at=_ts(m, "at"),
            cpu_percent=m.cpu_percent,
            cpu_count=m.cpu_count,
            load1=m.load1,
            memory_used_bytes=m.memory_used_bytes,
            memory_total_bytes=m.memory_total_bytes,
            disk_used_bytes=m.disk_used_bytes,
            disk_total_bytes=m.disk_total_bytes,
            net_sent_bytes=m.net_sent_bytes,
            net_recv_bytes=m.net_recv_bytes,
            gpus=[
                GpuHealth(
                    index=g.index,
                    name=g.name,
                    utilization_percent=g.utilization_percent,
                    memory_used_bytes=g.memory_used_bytes,
                    memory_total_bytes=g.memory_total_bytes,
                )
                for g in m.gpus
            ],
        )


class CreateNode(Request):
    name: Name
    project_id: Ref = ""
    labels: Labels = Field(default_factory=dict)


class UpdateNode(Request):
    labels: Labels = Field(default_factory=dict)
    replace_labels: bool = False


class NodeCreated(BaseModel):
    node: Node
    enrolment_token: str


class Enroll(Request):
    enrolment_token: Annotated[str, Field(max_length=512)]
    facts: Facts = Field(default_factory=dict)


class Enrolled(BaseModel):
    node: Node
    credential: str
    notifier: str


# ---- datasets
class Dataset(BaseModel):
    id: str
    name: str
    owner: str
    project_id: str
    node_id: str
    realm: str
    format: str
    size_bytes: int
    num_samples: int
    uri: str
    description: str
    created_at: datetime | None

    @classmethod
    def from_pb(cls, m: control_pb2.Dataset) -> Dataset:
        return cls(
            id=m.id,
            name=m.name,
            owner=m.owner,
            project_id=m.project_id,
            node_id=m.node_id,
            realm=m.realm,
            format=m.format,
            size_bytes=m.size_bytes,
            num_samples=m.num_samples,
            uri=m.uri,
            description=m.description,
            created_at=_ts(m, "created_at"),
        )


Realm = Annotated[str, Field(max_length=256)]
Format = Annotated[str, Field(max_length=64)]


class CreateDataset(Request):
    name: Name
    project_id: Ref = ""
    node_id: Annotated[str, Field(min_length=1, max_length=256)]
    realm: Realm = ""
    format: Format = ""
    size_bytes: Int53 = 0
    num_samples: Int53 = 0
    uri: Annotated[str, Field(max_length=2048)] = ""
    description: Description = ""


class AgentDataset(Request):
    name: Name
    realm: Realm = ""
    format: Format = ""
    size_bytes: Int53 = 0
    num_samples: Int53 = 0
    description: Description = ""


class UpdateDataset(Request):
    description: Description | None = None
    realm: Realm | None = None


# ---- designs and code
class Design(BaseModel):
    id: str
    name: str
    owner: str
    project_id: str
    description: str
    schema_: dict[str, Any] = Field(alias="schema")
    version: int
    created_at: datetime | None

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)

    @classmethod
    def from_pb(cls, m: control_pb2.Design) -> Design:
        return cls(
            id=m.id,
            name=m.name,
            owner=m.owner,
            project_id=m.project_id,
            description=m.description,
            schema_=_json_object(m.schema_json),
            version=m.version,
            created_at=_ts(m, "created_at"),
        )


class CreateDesign(Request):
    name: Name
    project_id: Ref = ""
    description: Description = ""
    schema_: dict[str, Any] = Field(alias="schema")


class UpdateDesign(Request):
    description: Description | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")


class CodeVersion(BaseModel):
    design_id: str
    version: int
    sha256: str
    size_bytes: int
    roles: list[str]
    created_at: datetime | None

    @classmethod
    def from_pb(cls, m: control_pb2.CodeVersion) -> CodeVersion:
        return cls(
            design_id=m.design_id,
            version=m.version,
            sha256=m.sha256,
            size_bytes=m.size_bytes,
            roles=list(m.roles),
            created_at=_ts(m, "created_at"),
        )


# ---- jobs and tasks
class Transition(BaseModel):
    from_state: str
    to_state: str
    reason: str
    at: datetime | None

    @classmethod
    def from_pb(cls, m: common_pb2.Transition) -> Transition:
        return cls(from_state=m.from_state, to_state=m.to_state, reason=m.reason, at=_ts(m, "at"))


class Job(BaseModel):
    id: str
    name: str
    owner: str
    project_id: str
    design_id: str
    code_version: int
    spec: dict[str, Any]
    state: str
    desired_state: str
    reason: str
    transitions: list[Transition]
    version: int
    created_at: datetime | None
    deadline: datetime | None

    @classmethod
    def from_pb(cls, m: control_pb2.Job) -> Job:
        return cls(
            id=m.id,
            name=m.name,
            owner=m.owner,
            project_id=m.project_id,
            design_id=m.design_id,
            code_version=m.code_version,
            spec=_json_object(m.spec_json),
            state=m.state,
            desired_state=m.desired_state,
            reason=m.reason,
            transitions=[Transition.from_pb(t) for t in m.transitions],
            version=m.version,
            created_at=_ts(m, "created_at"),
            deadline=_ts(m, "deadline"),
        )


class CreateJob(Request):
    name: Name
    project_id: Ref = ""
    design_id: Annotated[str, Field(min_length=1, max_length=256)]
    code_version: Int32 = Field(0, description="0 = latest")
    spec: dict[str, Any]


class UpdateJob(Request):
    spec: dict[str, Any] | None = None
    code_version: Int32 | None = None


class Task(BaseModel):
    id: str
    job_id: str
    role: str
    index: int
    node_id: str
    dataset_id: str
    groups: dict[str, str]
    state: str
    reason: str
    transitions: list[Transition]
    version: int
    attempt: int
    data_consumer: bool

    @classmethod
    def from_pb(cls, m: control_pb2.Task) -> Task:
        return cls(
            id=m.id,
            job_id=m.job_id,
            role=m.role,
            index=m.index,
            node_id=m.node_id,
            dataset_id=m.dataset_id,
            groups=dict(m.groups),
            state=m.state,
            reason=m.reason,
            transitions=[Transition.from_pb(t) for t in m.transitions],
            version=m.version,
            attempt=m.attempt,
            data_consumer=m.data_consumer,
        )


class TaskBundle(BaseModel):
    task: Task
    config: dict[str, Any]
    code: CodeVersion


class TaskStatus(Request):
    state: Literal["running", "completed", "failed"]
    reason: str = ""  # the controller keeps the first 4096 characters
    attempt: Int32 = 0


# ---- logs, metrics, endpoints
class LogLine(BaseModel):
    task_id: str = Field(description='the task the line is about ("" for a job-wide event)')
    stream: str = Field(description="stdout, stderr or agent for task output; service")
    line: str
    at: datetime | None
    seq: int
    source: str = Field(
        "task", description="task (a task's output), controller, notifier or apiserver"
    )
    node_id: str = ""
    level: str = Field("", description='a service event\'s level; "" for task output')

    @classmethod
    def from_pb(cls, m: control_pb2.LogLine) -> LogLine:
        return cls(
            task_id=m.task_id,
            stream=m.stream,
            line=m.line,
            at=_ts(m, "at"),
            seq=m.seq,
            source=m.source or "task",
            node_id=m.node_id,
            level=m.level,
        )


class Logs(BaseModel):
    lines: list[LogLine]
    last_seq: int
    dropped: int = Field(
        0, description="lines of the job the retention caps have deleted (the oldest first)"
    )


class NewLogLine(Request):
    task_id: Annotated[str, Field(min_length=1, max_length=256)]
    stream: Literal["stdout", "stderr", "agent"] = "stdout"
    line: str  # the controller keeps the first 16 KiB of a longer line
    at: datetime | None = Field(None, strict=False)
    mark: int = Field(
        0,
        ge=0,
        le=2**62,
        description="where the line ends in the task's output (attempt * 10^12 + byte offset):"
        " a line sent again is stored once; 0 = unknown",
    )


class AppendLogs(Request):
    lines: list[NewLogLine] = Field(max_length=5000)


class Metric(BaseModel):
    key: str
    value: float
    step: int
    at: datetime | None  # the route writes its body itself: rendered.metrics_response


class Metrics(BaseModel):
    metrics: list[Metric]
    run_uri: str
    model_uri: str
    last_seq: int  # ask with after_seq=last_seq for the points stored since


class NewMetric(Request):
    key: Annotated[str, Field(min_length=1, max_length=250)]
    value: float = Field(allow_inf_nan=False)
    step: Int53 = 0
    at: datetime | None = Field(
        None, strict=False, description="when it was measured (default: when it arrives)"
    )


class ReportMetrics(Request):
    metrics: list[NewMetric] = Field(max_length=10_000)
    run_uri: Annotated[str, Field(max_length=2048)] = ""
    model_uri: Annotated[str, Field(max_length=2048)] = ""


class RegisterEndpoint(Request):
    endpoint: Annotated[
        str,
        Field(
            pattern=r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$",
            max_length=300,
            description="host:port of the task's data-plane gRPC server",
        ),
    ]


class Endpoint(BaseModel):
    task_id: str
    role: str
    endpoint: str

    @classmethod
    def from_pb(cls, m: control_pb2.Endpoint) -> Endpoint:
        return cls(task_id=m.task_id, role=m.role, endpoint=m.endpoint)


# ---- project invitations
InvitationTtl = Annotated[int, Field(ge=0, le=7 * 24 * 3600), BeforeValidator(_integral)]


class Invitation(BaseModel):
    id: str
    project_id: str
    owner: str
    note: str
    created_at: datetime | None
    expires_at: datetime | None
    revoked: bool
    used_by: str
    used_at: datetime | None

    @classmethod
    def from_pb(cls, m: control_pb2.Invitation) -> Invitation:
        return cls(
            id=m.id,
            project_id=m.project_id,
            owner=m.owner,
            note=m.note,
            created_at=_ts(m, "created_at"),
            expires_at=_ts(m, "expires_at"),
            revoked=m.revoked,
            used_by=m.used_by,
            used_at=_ts(m, "used_at"),
        )


class CreateInvitation(Request):
    ttl_seconds: InvitationTtl = Field(default=0, description="0 = 24 hours; at most 7 days")
    note: Annotated[str, Field(max_length=200)] = ""


class InvitationSecret(BaseModel):
    """The secret is shown once: send ``link`` (a dashboard path) to the person invited."""

    invitation: Invitation
    secret: str
    link: str


class AcceptInvitation(Request):
    secret: Annotated[str, Field(min_length=1, max_length=256)]
    name: Annotated[str, Field(max_length=64)] = Field(
        default="", description="the new account's name; ignored when signed in"
    )
    email: Email = ""


class InvitationAccepted(BaseModel):
    project: Project
    user: User
    token: TokenSecret | None = Field(
        default=None, description="the new account's API token (only when one was created)"
    )


class RegisteredModel(BaseModel):
    """One of your jobs' registered models on the platform's MLflow server."""

    name: str
    description: str = ""
    latest_version: str = ""
    aliases: dict[str, str] = Field(default_factory=dict, description="alias → version")
    updated_at_ms: int = 0


class ModelVersion(BaseModel):
    """One version of a registered model."""

    name: str
    version: str
    aliases: list[str] = Field(default_factory=list)
    run_id: str = ""
    status: str = ""
    created_at_ms: int = 0
