"""Records and domain results to protobuf messages (and the few values coming the other way)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from google.protobuf.timestamp_pb2 import Timestamp

from flame_proto.v1 import common_pb2, control_pb2
from flame_service.auth import Caller
from flame_service.logship import ShippedLine
from flame_service.lru import Lru
from flame_service.timestamps import to_datetime, to_timestamp

from .domain.results import (
    CodeBundle,
    EndpointView,
    IssuedToken,
    LogPage,
    MetricsView,
    NewLogLine,
    NewMetric,
    NodeSecret,
    TaskBundle,
)
from .store.records import (
    AuditRecord,
    CodeRecord,
    DatasetRecord,
    DesignRecord,
    InvitationRecord,
    JobRecord,
    LogLineRecord,
    MetricRecord,
    NodeHealthRecord,
    NodeRecord,
    ProjectRecord,
    TaskRecord,
    TokenRecord,
    TransitionRecord,
    UserRecord,
)

In = TypeVar("In")
Out = TypeVar("Out")


class Remembered(Generic[In, Out]):
    """``convert(record)``, kept for the last records converted. The store hands an unchanged
    record out again as the same object (:mod:`.store.decoded`), so a listing asked for again
    converts only what changed. Kept by identity, with the record held so its ``id()`` cannot
    be reused; a message from here goes only into a response that copies it."""

    def __init__(self, convert: Callable[[In], Out], size: int = 2048) -> None:
        self._convert = convert
        self._items: Lru[int, tuple[In, Out]] = Lru(size)

    def __call__(self, record: In) -> Out:
        found = self._items.get(id(record))
        if found is not None:  # the record it was made from is held: the same object
            return found[1]
        out = self._convert(record)
        self._items.put(id(record), (record, out))
        return out


_PRESENCE = {
    "unknown": control_pb2.PRESENCE_UNSPECIFIED,
    "online": control_pb2.PRESENCE_ONLINE,
    "offline": control_pb2.PRESENCE_OFFLINE,
}
_PRESENCE_IN: dict[int, str] = {
    control_pb2.PRESENCE_ONLINE: "online",
    control_pb2.PRESENCE_OFFLINE: "offline",
}
_SCOPE = {
    "admin": common_pb2.SCOPE_ADMIN,
    "user": common_pb2.SCOPE_USER,
    "node": common_pb2.SCOPE_NODE,
}


def ts(value: datetime | None) -> Timestamp | None:
    return None if value is None else to_timestamp(value)


def from_ts(value: Timestamp, present: bool) -> datetime | None:
    """A proto timestamp as an aware UTC datetime; None when the field was not set."""
    return to_datetime(value) if present else None


def principal(caller: Caller) -> common_pb2.Principal:
    return common_pb2.Principal(
        scope=_SCOPE[caller.scope], subject=caller.subject, read_only=caller.read_only
    )


def presence_in(value: int) -> str:
    return _PRESENCE_IN.get(value, "")


def user(rec: UserRecord) -> control_pb2.User:
    return control_pb2.User(
        id=rec.id, name=rec.name, email=rec.email, admin=rec.admin, created_at=ts(rec.created_at)
    )


def token(issued: IssuedToken) -> control_pb2.TokenSecret:
    rec = issued.record
    return control_pb2.TokenSecret(
        id=rec.id,
        token=issued.secret,
        user_id=rec.subject,
        scopes=rec.scopes,
        expires_at=ts(rec.expires_at),
    )


def token_info(rec: TokenRecord) -> control_pb2.TokenInfo:
    return control_pb2.TokenInfo(
        id=rec.id,
        user_id=rec.subject,
        description=rec.description,
        scopes=rec.scopes,
        created_at=ts(rec.created_at),
        expires_at=ts(rec.expires_at),
        revoked=rec.revoked,
    )


def audit(rec: AuditRecord) -> control_pb2.AuditEntry:
    return control_pb2.AuditEntry(
        id=rec.id,
        at=ts(rec.created_at),
        actor_scope=rec.actor_scope,
        actor=rec.actor,
        action=rec.action,
        target=rec.target,
        outcome=rec.outcome,
        detail=rec.detail,
    )


def project(rec: ProjectRecord) -> control_pb2.Project:
    return control_pb2.Project(
        id=rec.id,
        name=rec.name,
        owner=rec.owner,
        members=rec.members,
        description=rec.description,
        created_at=ts(rec.created_at),
    )


def node(rec: NodeRecord) -> control_pb2.Node:
    return control_pb2.Node(
        id=rec.id,
        name=rec.name,
        owner=rec.owner,
        project_id=rec.project_id,
        labels=rec.labels,
        presence=_PRESENCE[rec.presence],
        last_seen=ts(rec.last_seen),
        enrolled=rec.enrolled,
        revoked=rec.revoked,
        created_at=ts(rec.created_at),
    )


def node_secret(value: NodeSecret) -> control_pb2.NodeWithSecret:
    return control_pb2.NodeWithSecret(node=node(value.node), secret=value.secret)


def dataset(rec: DatasetRecord) -> control_pb2.Dataset:
    return control_pb2.Dataset(
        id=rec.id,
        name=rec.name,
        owner=rec.owner,
        project_id=rec.project_id,
        node_id=rec.node_id,
        realm=rec.realm,
        format=rec.format,
        size_bytes=rec.size_bytes,
        num_samples=rec.num_samples,
        uri=rec.uri,
        description=rec.description,
        created_at=ts(rec.created_at),
    )


def design(rec: DesignRecord) -> control_pb2.Design:
    return control_pb2.Design(
        id=rec.id,
        name=rec.name,
        owner=rec.owner,
        project_id=rec.project_id,
        description=rec.description,
        schema_json=json.dumps(rec.schema_, sort_keys=True),
        created_at=ts(rec.created_at),
        version=rec.version,
    )


def code(rec: CodeRecord) -> control_pb2.CodeVersion:
    return control_pb2.CodeVersion(
        design_id=rec.design_id,
        version=rec.version,
        sha256=rec.sha256,
        size_bytes=rec.size_bytes,
        roles=rec.roles,
        created_at=ts(rec.created_at),
    )


def code_bundle(value: CodeBundle) -> control_pb2.CodeBundle:
    return control_pb2.CodeBundle(meta=code(value.meta), zip=value.zip)


def transition(rec: TransitionRecord) -> common_pb2.Transition:
    return common_pb2.Transition(
        from_state=rec.from_state, to_state=rec.to_state, reason=rec.reason, at=ts(rec.at)
    )


def job(rec: JobRecord) -> control_pb2.Job:
    return control_pb2.Job(
        id=rec.id,
        name=rec.name,
        owner=rec.owner,
        project_id=rec.project_id,
        design_id=rec.design_id,
        code_version=rec.code_version,
        spec_json=json.dumps(rec.spec, sort_keys=True),
        state=rec.state,
        desired_state=rec.desired_state,
        reason=rec.reason,
        transitions=[transition(t) for t in rec.transitions],
        version=rec.version,
        created_at=ts(rec.created_at),
        deadline=ts(rec.deadline),
    )


def task(rec: TaskRecord) -> control_pb2.Task:
    return control_pb2.Task(
        id=rec.id,
        job_id=rec.job_id,
        role=rec.role,
        index=rec.index,
        node_id=rec.node_id or "",
        dataset_id=rec.dataset_id or "",
        groups=rec.groups,
        state=rec.state,
        reason=rec.reason,
        transitions=[transition(t) for t in rec.transitions],
        version=rec.version,
        attempt=rec.attempt,
        data_consumer=rec.data_consumer,
    )


def task_bundle(value: TaskBundle) -> control_pb2.TaskBundle:
    return control_pb2.TaskBundle(
        task=task(value.task),
        config_json=json.dumps(value.config, sort_keys=True),
        code=code(value.code),
        code_zip=value.code_zip,
    )


def log_line(rec: LogLineRecord) -> control_pb2.LogLine:
    return control_pb2.LogLine(
        task_id=rec.task_id,
        stream=rec.stream,
        line=rec.line,
        at=ts(rec.at),
        seq=rec.seq,
        source=rec.source,
        node_id=rec.node_id,
        level=rec.level,
        job_id=rec.job_id,
    )


def log_page(value: LogPage) -> control_pb2.GetLogsResponse:
    return control_pb2.GetLogsResponse(
        lines=[log_line(x) for x in value.lines], last_seq=value.last_seq, dropped=value.dropped
    )


def shipped_line(msg: control_pb2.LogLine) -> ShippedLine:
    return ShippedLine(
        job_id=msg.job_id,
        level=msg.level,
        line=msg.line,
        task_id=msg.task_id,
        node_id=msg.node_id,
        at=from_ts(msg.at, msg.HasField("at")) or datetime.now(UTC),
    )


def new_log_line(msg: control_pb2.LogLine) -> NewLogLine:
    return NewLogLine(
        task_id=msg.task_id,
        stream=msg.stream or "stdout",
        line=msg.line,
        at=from_ts(msg.at, msg.HasField("at")),
        mark=msg.mark,
    )


def metric(rec: MetricRecord) -> control_pb2.Metric:
    return control_pb2.Metric(key=rec.key, value=rec.value, step=rec.step, at=ts(rec.at))


def new_metric(msg: control_pb2.Metric) -> NewMetric:
    return NewMetric(
        key=msg.key, value=msg.value, step=msg.step, at=from_ts(msg.at, msg.HasField("at"))
    )


def metrics(value: MetricsView) -> control_pb2.MetricsResponse:
    return control_pb2.MetricsResponse(
        metrics=[metric(m) for m in value.metrics],
        run_uri=value.run_uri,
        model_uri=value.model_uri,
        last_seq=value.last_seq,
    )


def endpoints(items: list[EndpointView]) -> control_pb2.ListEndpointsResponse:
    return control_pb2.ListEndpointsResponse(
        items=[
            control_pb2.Endpoint(task_id=e.task_id, role=e.role, endpoint=e.endpoint) for e in items
        ]
    )


def page(next_token: str) -> common_pb2.PageResponse:
    return common_pb2.PageResponse(next_page_token=next_token)


def invitation(rec: InvitationRecord) -> control_pb2.Invitation:
    return control_pb2.Invitation(
        id=rec.id,
        project_id=rec.project_id,
        owner=rec.owner,
        note=rec.note,
        created_at=ts(rec.created_at),
        expires_at=ts(rec.expires_at),
        revoked=rec.revoked,
        used_by=rec.used_by,
        used_at=ts(rec.used_at),
    )


_HEALTH_FIELDS = (
    "cpu_percent",
    "cpu_count",
    "load1",
    "memory_used_bytes",
    "memory_total_bytes",
    "disk_used_bytes",
    "disk_total_bytes",
    "net_sent_bytes",
    "net_recv_bytes",
)
_GPU_FIELDS = ("index", "name", "utilization_percent", "memory_used_bytes", "memory_total_bytes")


def health_in(msg: control_pb2.NodeHealthSample) -> dict[str, Any]:
    """A reported sample's measurements (the node and the time are the controller's)."""
    return {
        **{f: getattr(msg, f) for f in _HEALTH_FIELDS},
        "gpus": [{f: getattr(g, f) for f in _GPU_FIELDS} for g in msg.gpus],
    }


def health(rec: NodeHealthRecord) -> control_pb2.NodeHealthSample:
    return control_pb2.NodeHealthSample(
        node_id=rec.node_id,
        at=ts(rec.at),
        gpus=[control_pb2.GpuHealth(**g.model_dump()) for g in rec.gpus],
        **{f: getattr(rec, f) for f in _HEALTH_FIELDS},
    )


listed_job = Remembered(job)
listed_task = Remembered(task)
