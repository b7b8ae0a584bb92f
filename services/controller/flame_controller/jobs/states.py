"""Job and task state machines: the allowed transitions and what a transition writes.

Job: ``ready → starting → deploying → running → completed | failed | terminated``; a stop goes
through ``stopping`` to ``terminated``.  Task: ``pending → scheduled → running → completed |
failed | terminated``, and ``running → scheduled`` when the reconciler restarts a deployer-run
task whose process died.  Terminal states are final, but for :func:`late_report`: a task given
up for its absent node takes the outcome its agent reports when it is back.

:func:`job_transition` / :func:`task_transition` are pure: they return the field changes and the
:class:`TransitionRecord` to hand to ``store.cas_job`` / ``store.cas_task`` (which applies both in
one compare-and-set), or raise :class:`IllegalTransition`.  A transition to the current state is
illegal too: callers that want idempotence (a repeated status report) compare first.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from flame_service.errors import FailedPrecondition

from ..store.records import (
    JOB_TERMINAL_STATES,
    JobRecord,
    JobState,
    TaskRecord,
    TaskState,
    TransitionRecord,
    utcnow,
)

JOB_TRANSITIONS: Mapping[str, frozenset[str]] = {
    # a job stopped before anything was deployed ends at once; a permanent error fails it
    "ready": frozenset({"starting", "terminated", "failed"}),
    "starting": frozenset({"deploying", "stopping", "failed"}),
    "deploying": frozenset({"running", "stopping", "failed"}),
    "running": frozenset({"completed", "stopping", "failed"}),
    "stopping": frozenset({"terminated", "failed"}),
    "completed": frozenset(),
    "failed": frozenset(),
    "terminated": frozenset(),
}

TASK_TRANSITIONS: Mapping[str, frozenset[str]] = {
    "pending": frozenset({"scheduled", "failed", "terminated"}),
    # a node may report "completed"/"failed" without the "running" report reaching us first
    "scheduled": frozenset({"running", "completed", "failed", "terminated"}),
    # a deployer-run task whose process died is started again (bounded, by the reconciler)
    "running": frozenset({"scheduled", "completed", "failed", "terminated"}),
    "completed": frozenset(),
    "failed": frozenset(),
    "terminated": frozenset(),
}

ACTIVE_JOB_STATES: frozenset[str] = frozenset({"starting", "deploying", "running", "stopping"})
LIVE_TASK_STATES: frozenset[str] = frozenset({"pending", "scheduled", "running"})


class IllegalTransition(FailedPrecondition):
    """The requested state change is not allowed from the current state."""

    code = "illegal_transition"


@dataclass(frozen=True)
class Transition:
    """What to write: ``changes`` plus ``record`` appended to the transition history."""

    changes: dict[str, Any]
    record: TransitionRecord


def job_can(from_state: str, to_state: str) -> bool:
    return to_state in JOB_TRANSITIONS.get(from_state, frozenset())


def task_can(from_state: str, to_state: str) -> bool:
    return to_state in TASK_TRANSITIONS.get(from_state, frozenset())


def job_transition(
    job: JobRecord, to_state: JobState, reason: str = "", *, now: datetime | None = None
) -> Transition:
    """The changes for moving ``job`` to ``to_state``.

    Entering ``starting`` stamps ``started_at`` and the ``deadline`` (``spec.max_run_time`` after
    it); entering a terminal state clears ``next_check_at``.
    """
    if not job_can(job.state, to_state):
        raise IllegalTransition(f"job {job.id}: cannot go from {job.state!r} to {to_state!r}")
    at = now or utcnow()
    changes: dict[str, Any] = {"state": to_state, "reason": reason}
    if to_state == "starting":
        max_run_time = float(job.spec.get("max_run_time", 3600.0))
        changes["started_at"] = at
        changes["deadline"] = at + timedelta(seconds=max_run_time)
    if to_state in JOB_TERMINAL_STATES:  # nothing left to wake up for
        changes["next_check_at"] = None
    record = TransitionRecord(from_state=job.state, to_state=to_state, reason=reason, at=at)
    return Transition(changes=changes, record=record)


def task_transition(
    task: TaskRecord, to_state: TaskState, reason: str = "", *, now: datetime | None = None
) -> Transition:
    """The changes for moving ``task`` to ``to_state``."""
    if not task_can(task.state, to_state):
        raise IllegalTransition(f"task {task.id}: cannot go from {task.state!r} to {to_state!r}")
    at = now or utcnow()
    changes: dict[str, Any] = {"state": to_state, "reason": reason}
    record = TransitionRecord(from_state=task.state, to_state=to_state, reason=reason, at=at)
    return Transition(changes=changes, record=record)


GIVEN_UP = "given_up"  # task.info flag: terminated because its node stayed away, outcome unknown


def late_report(
    task: TaskRecord, to_state: TaskState, reason: str, *, now: datetime | None = None
) -> Transition:
    """The one way out of a terminal state: a task that was given up (``terminated`` because
    its node stayed offline until the rest of the job had ended) takes the outcome its agent
    reports for it later, ``completed`` or ``failed``: what its process really did."""
    if task.state != "terminated" or not task.info.get(GIVEN_UP):
        raise IllegalTransition(f"task {task.id}: cannot go from {task.state!r} to {to_state!r}")
    if to_state not in ("completed", "failed"):
        raise IllegalTransition(f"task {task.id}: a late report must be completed or failed")
    at = now or utcnow()
    info = {k: v for k, v in task.info.items() if k != GIVEN_UP}
    changes: dict[str, Any] = {"state": to_state, "reason": reason, "info": info}
    record = TransitionRecord(from_state=task.state, to_state=to_state, reason=reason, at=at)
    return Transition(changes=changes, record=record)
