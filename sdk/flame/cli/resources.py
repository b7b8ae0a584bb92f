"""Typed views of the REST resources flamectl and the SDK read (snake_case, as in the API).

Unknown fields are kept (``extra="allow"``) so a newer server never breaks an older client."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Resource(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True)


class WhoAmI(Resource):
    scope: str
    subject: str
    read_only: bool = False


class User(Resource):
    id: str
    name: str
    email: str = ""
    admin: bool = False
    created_at: datetime | None = None


class TokenSecret(Resource):
    id: str
    token: str
    user_id: str
    scopes: list[str] = Field(default_factory=list)
    expires_at: datetime | None = None


class TokenInfo(Resource):
    id: str
    user_id: str
    description: str = ""
    scopes: list[str] = Field(default_factory=list)
    created_at: datetime | None = None
    expires_at: datetime | None = None
    revoked: bool = False


class TrackingLogin(Resource):
    uri: str
    username: str
    password: str


class AuditEntry(Resource):
    id: str
    at: datetime | None = None
    actor_scope: str = ""
    actor: str = ""
    action: str = ""
    target: str = ""
    outcome: str = ""
    detail: str = ""


class Project(Resource):
    id: str
    name: str
    owner: str = ""
    members: list[str] = Field(default_factory=list)
    description: str = ""
    created_at: datetime | None = None


class Invitation(Resource):
    id: str
    project_id: str
    owner: str = ""
    note: str = ""
    created_at: datetime | None = None
    expires_at: datetime | None = None
    revoked: bool = False
    used_by: str = ""
    used_at: datetime | None = None


class InvitationSecret(Resource):
    invitation: Invitation
    secret: str
    link: str  # a dashboard path; the apiserver's URL goes in front


class InvitationAccepted(Resource):
    project: Project
    user: User
    token: TokenSecret | None = None


class Node(Resource):
    id: str
    name: str
    owner: str = ""
    project_id: str = ""
    labels: dict[str, str] = Field(default_factory=dict)
    presence: str = "unknown"
    last_seen: datetime | None = None
    enrolled: bool = False
    revoked: bool = False
    created_at: datetime | None = None


class GpuHealth(Resource):
    index: int
    name: str = ""
    utilization_percent: float = 0.0
    memory_used_bytes: int = 0
    memory_total_bytes: int = 0


class NodeHealth(Resource):
    """One health sample of a node (``GET /v1/nodes/{id}/health``)."""

    node_id: str
    at: datetime | None = None
    cpu_percent: float = 0.0
    cpu_count: int = 0
    load1: float = 0.0
    memory_used_bytes: int = 0
    memory_total_bytes: int = 0
    disk_used_bytes: int = 0
    disk_total_bytes: int = 0
    net_sent_bytes: int = 0
    net_recv_bytes: int = 0
    gpus: list[GpuHealth] = Field(default_factory=list)


class NodeCreated(Resource):
    node: Node
    enrolment_token: str


class Dataset(Resource):
    id: str
    name: str
    owner: str = ""
    project_id: str = ""
    node_id: str = ""
    realm: str = ""
    format: str = ""
    size_bytes: int = 0
    num_samples: int = 0
    uri: str = ""
    description: str = ""
    created_at: datetime | None = None


class Design(Resource):
    id: str
    name: str
    owner: str = ""
    project_id: str = ""
    description: str = ""
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    version: int = 0
    created_at: datetime | None = None


class CodeVersion(Resource):
    design_id: str
    version: int
    sha256: str
    size_bytes: int = 0
    roles: list[str] = Field(default_factory=list)
    created_at: datetime | None = None


class Transition(Resource):
    from_state: str = ""
    to_state: str
    reason: str = ""
    at: datetime | None = None


class Job(Resource):
    id: str
    name: str
    owner: str = ""
    project_id: str = ""
    design_id: str = ""
    code_version: int = 0
    spec: dict[str, Any] = Field(default_factory=dict)
    state: str = ""
    desired_state: str = ""
    reason: str = ""
    transitions: list[Transition] = Field(default_factory=list)
    version: int = 0
    created_at: datetime | None = None
    deadline: datetime | None = None

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES


TERMINAL_STATES = frozenset({"completed", "failed", "terminated"})


class Task(Resource):
    id: str
    job_id: str
    role: str
    index: int = 0
    node_id: str = ""
    dataset_id: str = ""
    groups: dict[str, str] = Field(default_factory=dict)
    state: str = ""
    reason: str = ""
    transitions: list[Transition] = Field(default_factory=list)
    attempt: int = 0
    data_consumer: bool = False


class LogLine(Resource):
    task_id: str
    stream: str = "stdout"
    line: str
    at: datetime | None = None
    seq: int = 0
    source: str = "task"
    node_id: str = ""
    level: str = ""


class Logs(Resource):
    lines: list[LogLine]
    last_seq: int = 0
    dropped: int = 0  # lines of the job retention deleted


class Metric(Resource):
    key: str
    value: float
    step: int = 0
    at: datetime | None = None


class Metrics(Resource):
    metrics: list[Metric]
    run_uri: str = ""
    model_uri: str = ""
    last_seq: int = 0  # ask with after_seq=last_seq for the points stored since
