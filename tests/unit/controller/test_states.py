"""Job and task state machines."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from flame_controller.jobs.states import (
    JOB_TRANSITIONS,
    TASK_TRANSITIONS,
    IllegalTransition,
    job_transition,
    task_transition,
)
from flame_controller.store.records import JobRecord, TaskRecord
from flame_service.errors import FailedPrecondition

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def job(state: str = "ready", **spec: object) -> JobRecord:
    return JobRecord(
        id="j1",
        name="j",
        owner="u",
        design_id="d",
        code_version=1,
        spec=dict(spec),
        state=state,
    )


def task(state: str = "pending") -> TaskRecord:
    return TaskRecord(id="t1", job_id="j1", role="trainer", index=0, state=state)


def test_happy_path_of_a_job() -> None:
    states = ["ready", "starting", "deploying", "running", "completed"]
    for a, b in itertools.pairwise(states):
        t = job_transition(job(a), b, f"to {b}", now=NOW)
        assert t.changes["state"] == b
        assert t.changes["reason"] == f"to {b}"
        assert (t.record.from_state, t.record.to_state, t.record.at) == (a, b, NOW)


def test_starting_stamps_start_and_deadline_from_max_run_time() -> None:
    t = job_transition(job("ready", max_run_time=90), "starting", now=NOW)
    assert t.changes["started_at"] == NOW
    assert t.changes["deadline"] == NOW + timedelta(seconds=90)
    default = job_transition(job("ready"), "starting", now=NOW)
    assert default.changes["deadline"] == NOW + timedelta(hours=1)


def test_terminal_states_clear_the_wake_up_and_are_final() -> None:
    for end in ["completed", "failed", "terminated"]:
        src = "stopping" if end == "terminated" else "running"
        t = job_transition(job(src), end, now=NOW)
        assert t.changes["next_check_at"] is None
        assert JOB_TRANSITIONS[end] == frozenset()
        assert TASK_TRANSITIONS[end] == frozenset()
        for target in JOB_TRANSITIONS:
            with pytest.raises(IllegalTransition):
                job_transition(job(end), target)


@pytest.mark.parametrize(
    ("src", "dst"),
    [
        ("ready", "running"),
        ("ready", "completed"),
        ("running", "ready"),
        ("deploying", "completed"),
        ("running", "terminated"),  # a stop goes through stopping
        ("running", "running"),
    ],
)
def test_illegal_job_transitions_raise(src: str, dst: str) -> None:
    with pytest.raises(IllegalTransition, match=f"cannot go from '{src}' to '{dst}'") as info:
        job_transition(job(src), dst)
    assert isinstance(info.value, FailedPrecondition)
    assert info.value.code == "illegal_transition"


def test_stop_paths() -> None:
    assert job_transition(job("ready"), "terminated").changes["state"] == "terminated"
    for src in ["starting", "deploying", "running"]:
        assert job_transition(job(src), "stopping").changes["state"] == "stopping"
    assert job_transition(job("stopping"), "terminated").changes["state"] == "terminated"


def test_task_transitions() -> None:
    path = ["pending", "scheduled", "running", "completed"]
    for a, b in itertools.pairwise(path):
        t = task_transition(task(a), b, now=NOW)
        assert t.changes == {"state": b, "reason": ""}
        assert (t.record.from_state, t.record.to_state) == (a, b)
    assert task_transition(task("scheduled"), "completed").changes["state"] == "completed"
    for bad_src, bad_dst in [
        ("pending", "running"),
        ("completed", "running"),
        ("failed", "pending"),
    ]:
        with pytest.raises(IllegalTransition):
            task_transition(task(bad_src), bad_dst)


def test_every_state_is_reachable_from_the_initial_one() -> None:
    for table, start in [(JOB_TRANSITIONS, "ready"), (TASK_TRANSITIONS, "pending")]:
        seen, todo = {start}, [start]
        while todo:
            for nxt in table[todo.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        assert seen == set(table)
