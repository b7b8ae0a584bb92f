"""The reconciler's decisions: pure functions over stored state (no store, no I/O, no clock).

Each answers "what is the next step?" from what the store holds (and, for deployer-run tasks,
what the deployer observed); :mod:`flame_controller.jobs.reconciler` carries the step out
through :mod:`flame_controller.jobs.effects`. Kept pure so every rule is testable with records.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from ..deployers.base import Observed
from ..store.records import JobRecord, JobState, NodeRecord, TaskRecord, TaskState
from .states import LIVE_TASK_STATES

JobAction = Literal[
    "cleanup",  # terminal: stop leftovers, then stop asking to be looked at
    "terminate",  # stopping, or stopped before it started: halt tasks, then terminated
    "request_stop",  # desired stopped while active: -> stopping
    "wait",  # created, not started: nothing to do until start or stop
    "start",  # ready -> starting
    "timeout",  # past max_run_time -> stopping
    "deploy",  # starting -> deploying (after checking code and nodes)
    "drive",  # deploying / running: drive the tasks, then judge the job
]


def job_action(job: JobRecord, now: datetime) -> JobAction:
    """The next thing to do for ``job`` as a whole."""
    if job.terminal:
        return "cleanup"
    if job.state == "stopping":
        return "terminate"
    if job.desired_state == "stopped":
        return "terminate" if job.state == "ready" else "request_stop"
    if job.desired_state != "running":
        return "wait"
    if job.state == "ready":
        return "start"
    if job.deadline is not None and now >= job.deadline:
        return "timeout"
    if job.state == "starting":
        return "deploy"
    return "drive"


def judge(job: JobRecord, tasks: Sequence[TaskRecord]) -> tuple[JobState, str] | None:
    """The job's next state from its tasks' states, if it changes."""
    for t in tasks:
        if not t.data_consumer and t.state == "failed":
            return "failed", f"task {t.id} ({t.role}) failed: {t.reason or 'no reason'}"
    consumers = [t for t in tasks if t.data_consumer]
    # only a task known dead counts against the quorum: one given up on because its node
    # stayed away (terminated) may have done its part (the data plane judged its quorum)
    alive = sum(1 for t in consumers if t.state != "failed")
    min_trainers = int(job.spec.get("min_trainers", 1))
    if consumers and alive < min_trainers:
        role = consumers[0].role
        lost = "; ".join(f"{t.id}: {t.reason or t.state}" for t in consumers if t.state == "failed")
        return "failed", (
            f"only {alive} of {len(consumers)} {role} tasks are left; "
            f"min_trainers is {min_trainers} ({lost[:500]})"
        )
    live = [t for t in tasks if t.state in LIVE_TASK_STATES]
    if job.state == "deploying" and not any(t.state in ("pending", "scheduled") for t in tasks):
        return "running", "every task is running"
    if job.state == "running" and not live:
        roles = {t.role for t in tasks}
        done = {t.role for t in tasks if t.state == "completed"}
        if roles <= done:
            return "completed", "every role completed"
        missing = ", ".join(sorted(roles - done))
        return "failed", f"every task ended but no {missing} task completed"
    return None


@dataclass(frozen=True)
class NodeVerdict:
    """What a node's state says about the tasks on it.

    ``lost``: the node is gone for good (deleted, revoked): its tasks can never report again.
    ``offline``: its agent has been away longer than the grace period; its tasks may well be
    running (an agent outage does not stop them), so this alone fails nothing.
    ``look_again_in``: a short absence (a flamelet restart), waited for.
    """

    lost: str | None = None
    offline: str | None = None
    look_again_in: float | None = None


def node_verdict(node_id: str, node: NodeRecord | None, now: datetime, grace: float) -> NodeVerdict:
    """See :class:`NodeVerdict`."""
    if node is None:
        return NodeVerdict(lost=f"node {node_id} no longer exists")
    if node.revoked:
        return NodeVerdict(lost=f"node {node_id} was revoked")
    if node.presence != "offline":
        return NodeVerdict()
    if node.last_seen is None:
        return NodeVerdict(offline=f"node {node_id} is offline")
    gone_for = (now - node.last_seen).total_seconds()
    if gone_for >= grace:
        return NodeVerdict(offline=f"node {node_id} offline since {node.last_seen.isoformat()}")
    return NodeVerdict(look_again_in=grace - gone_for)


def written_off(task: TaskRecord, tasks: Sequence[TaskRecord], away: set[str]) -> bool:
    """Whether a live ``task`` on a node that is away (``away``: ids of tasks on nodes offline
    past the grace period) is given up: only once no other task of the job is live except on
    such nodes. Until then the job's own data plane decides (the aggregator goes on without a
    silent trainer and fails the job itself when too few answer); a node whose agent comes back
    reports what its tasks really did."""
    if task.id not in away:
        return False
    return not any(t.state in LIVE_TASK_STATES and t.id not in away for t in tasks)


def outcome(seen: Observed) -> tuple[TaskState, str] | None:
    """A deployer-run task's final state from what the deployer sees (None: still running)."""
    if seen.state == "running":
        return None
    if seen.state == "exited" and seen.exit_code == 0:
        return "completed", "exit code 0"
    return "failed", seen.detail or "process ended"


# Exit codes of ``python -m flame.launch`` that another attempt cannot change.
FINAL_EXITS: Mapping[int, str] = {2: "configuration error", 3: "quorum lost"}
# task.info keys of a restarted task
RESTART_AT = "restart_at"  # when its next attempt may start
RESTART_STREAK = "restart_streak"  # restarts in a row without a new round reported between
RESTART_STEP = "restart_step"  # the last metric step of its job when it was restarted

ExitStep = Literal["completed", "failed", "restart"]


@dataclass(frozen=True)
class RestartPolicy:
    """How often a deployer-run task whose process died is started again (in the same task
    folder, so an aggregator resumes from its checkpoint), and how long to wait before each
    attempt (capped exponential backoff with full jitter). ``max_restarts`` bounds the restarts
    in a row that made no progress: an attempt during which its job reported a new round
    (by any task: a middle aggregator reports none itself) starts the count again, so a long
    job survives occasional crashes while a crash loop ends."""

    max_restarts: int = 3
    backoff_initial: float = 0.5
    backoff_max: float = 30.0


def restart_streak(task: TaskRecord, last_step: int | None) -> int:
    """Restarts in a row without progress before this exit: none when the job reported a
    metric step (``last_step``) beyond the one stored at this task's restart."""
    streak = int(task.info.get(RESTART_STREAK, 0))
    before = task.info.get(RESTART_STEP)
    if streak and last_step is not None and (before is None or last_step > int(before)):
        return 0
    return streak


def after_exit(
    task: TaskRecord, seen: Observed, max_restarts: int, streak: int = 0
) -> tuple[ExitStep, str] | None:
    """What to do with a deployer-run task from what the deployer sees: nothing while it runs
    (None); ``completed`` on exit 0; ``restart`` when it died any other way and fewer than
    ``max_restarts`` restarts in a row (``streak``) were used; else ``failed``, the reason
    naming the last exit. Exit codes no new attempt can change fail at once."""
    ended = outcome(seen)
    if ended is None:
        return None
    state, why = ended
    if state == "completed":
        return "completed", why
    if seen.exit_code in FINAL_EXITS:
        return "failed", why
    if streak >= max_restarts:
        return "failed", f"{why} (no restart left after {streak})" if streak else why
    return (
        "restart",
        f"restart {streak + 1} of {max_restarts}: attempt {task.attempt} ended ({why})",
    )


def restart_wait(task: TaskRecord, now: datetime) -> float:
    """Seconds until a restarted task's next attempt may start (0: now)."""
    raw = task.info.get(RESTART_AT)
    if not raw:
        return 0.0
    try:
        at = datetime.fromisoformat(str(raw))
    except ValueError:
        return 0.0
    return max(0.0, (at - now).total_seconds())
