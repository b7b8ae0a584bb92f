"""Values the domain layer returns besides plain records (frozen, transport-neutral)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from flame_controller.store.records import (
    CodeRecord,
    LogLineRecord,
    MetricRecord,
    NodeRecord,
    TaskRecord,
    TokenRecord,
)

T = TypeVar("T")


@dataclass(frozen=True)
class Listing(Generic[T]):
    items: Sequence[T]
    next_page_token: str = ""


@dataclass(frozen=True)
class IssuedToken:
    """A freshly created secret: ``secret`` is shown once, only its hash is stored."""

    record: TokenRecord
    secret: str


@dataclass(frozen=True)
class NodeSecret:
    node: NodeRecord
    secret: str  # enrolment token (create) or node credential (enrol)


@dataclass(frozen=True)
class CodeBundle:
    meta: CodeRecord
    zip: bytes


@dataclass(frozen=True)
class TaskBundle:
    task: TaskRecord
    config: dict[str, Any]
    code: CodeRecord
    code_zip: bytes


@dataclass(frozen=True)
class LogPage:
    lines: Sequence[LogLineRecord]
    last_seq: int
    dropped: int = 0  # lines of the job retention has deleted


@dataclass(frozen=True)
class MetricsView:
    metrics: Sequence[MetricRecord]
    run_uri: str = ""
    model_uri: str = ""
    last_seq: int = 0  # the store position of the last metric: the next read starts after it


@dataclass(frozen=True)
class EndpointView:
    task_id: str
    role: str
    endpoint: str


@dataclass(frozen=True)
class NewLogLine:
    task_id: str
    stream: str
    line: str
    at: datetime | None = None
    mark: int = 0  # where the line ends in the task's output; 0: unknown


@dataclass(frozen=True)
class NewMetric:
    key: str
    value: float
    step: int = 0
    at: datetime | None = None
