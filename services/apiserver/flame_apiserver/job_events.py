"""What changed in a job since the last look: the plain logic behind ``/v1/jobs/{id}/events``.

The route polls the controller (the only holder of state) and hands each snapshot to a
:class:`JobWatch`, which turns it into the events a client has not seen yet: new metric points,
task state changes, log lines and job state changes. No I/O here, so it is testable alone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

from flame_proto.v1 import control_pb2

EventKind = Literal["job", "task", "metric", "log", "end", "error"]
TERMINAL_JOB_STATES = frozenset({"completed", "failed", "terminated"})


@dataclass(frozen=True)
class Event:
    kind: EventKind
    data: dict[str, Any]

    def encode(self, event_id: int) -> bytes:
        """One server-sent event (``text/event-stream``)."""
        body = json.dumps(self.data, separators=(",", ":"), sort_keys=True)
        return f"id: {event_id}\nevent: {self.kind}\ndata: {body}\n\n".encode()


def _ts(message: Any, name: str) -> str | None:
    if not message.HasField(name):
        return None
    text: str = getattr(message, name).ToJsonString()
    return text


@dataclass
class JobWatch:
    """Remembers what a client was sent; each ``*_events`` call returns only what is new."""

    job_state: str = ""
    job_desired: str = ""
    tasks: dict[str, tuple[str, int, str, str]] = field(default_factory=dict)
    points: set[tuple[str, int]] = field(default_factory=set)
    metric_seq: int = 0
    log_seq: int = 0

    def job_events(self, job: control_pb2.Job) -> list[Event]:
        if (job.state, job.desired_state) == (self.job_state, self.job_desired):
            return []
        self.job_state, self.job_desired = job.state, job.desired_state
        data = {
            "id": job.id,
            "state": job.state,
            "desired_state": job.desired_state,
            "reason": job.reason,
        }
        return [Event("job", data)]

    def task_events(self, tasks: list[control_pb2.Task]) -> list[Event]:
        out = []
        for t in tasks:
            seen = (t.state, t.attempt, t.node_id, t.reason)
            if self.tasks.get(t.id) == seen:
                continue
            self.tasks[t.id] = seen
            data = {
                "id": t.id,
                "role": t.role,
                "index": t.index,
                "node_id": t.node_id,
                "groups": dict(t.groups),
                "state": t.state,
                "reason": t.reason,
                "attempt": t.attempt,
            }
            out.append(Event("task", data))
        return out

    def metric_events(self, resp: control_pb2.MetricsResponse) -> list[Event]:
        """The points of ``resp`` (those stored after ``metric_seq``) not sent yet; the next
        read starts after them."""
        self.metric_seq = max(self.metric_seq, resp.last_seq)
        out = []
        for m in sorted(resp.metrics, key=lambda m: (m.step, m.key)):
            point = (m.key, m.step)
            if point in self.points:
                continue
            self.points.add(point)
            data = {"key": m.key, "value": m.value, "step": m.step, "at": _ts(m, "at")}
            out.append(Event("metric", data))
        return out

    def log_events(self, lines: list[control_pb2.LogLine]) -> list[Event]:
        out = []
        for line in lines:
            if line.seq <= self.log_seq:
                continue
            self.log_seq = line.seq
            data = {
                "task_id": line.task_id,
                "stream": line.stream,
                "line": line.line,
                "source": line.source or "task",
                "node_id": line.node_id,
                "level": line.level,
                "at": _ts(line, "at"),
                "seq": line.seq,
            }
            out.append(Event("log", data))
        return out

    @property
    def ended(self) -> bool:
        return self.job_state in TERMINAL_JOB_STATES
