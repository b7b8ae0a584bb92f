"""The controller's Prometheus series come from what the store holds (SQLite and Mongo)."""

from __future__ import annotations

from datetime import timedelta

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from flame_controller.observability import ControllerMetrics, start_latency
from flame_controller.store.base import Store
from flame_controller.store.records import (
    JobRecord,
    MetricRecord,
    NodeRecord,
    TaskRecord,
    TransitionRecord,
    utcnow,
)


def _samples(metrics: ControllerMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(metrics.registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _moves(*steps: tuple[str, str, float]) -> list[TransitionRecord]:
    t0 = utcnow() - timedelta(minutes=5)
    return [
        TransitionRecord(from_state=a, to_state=b, at=t0 + timedelta(seconds=s))
        for a, b, s in steps
    ]


def test_start_latency_is_from_the_last_scheduling_to_running() -> None:
    task = TaskRecord(
        id="t-1",
        job_id="j-1",
        role="trainer",
        index=0,
        state="running",
        attempt=2,
        transitions=_moves(
            ("pending", "scheduled", 0),
            ("scheduled", "running", 3),
            ("running", "scheduled", 10),  # a restart
            ("scheduled", "running", 10.5),
        ),
    )
    assert start_latency(task) == 0.5
    assert start_latency(task.model_copy(update={"transitions": task.transitions[:1]})) is None


async def test_jobs_rounds_start_latency_and_nodes(store: Store) -> None:
    created = utcnow() - timedelta(minutes=10)
    for i, state in enumerate(["completed", "completed", "running", "failed", "ready"]):
        await store.create_job(
            JobRecord(
                id=f"j-{i}",
                name=f"job-{i}",
                owner="u-1",
                design_id="d-1",
                code_version=1,
                state=state,
                created_at=created,
                transitions=_moves(("ready", state, 1)),
            )
        )
    await store.create_job(
        JobRecord(
            id="j-old",
            name="old",
            owner="u-1",
            design_id="d-1",
            code_version=1,
            state="completed",
            transitions=[
                TransitionRecord(
                    from_state="running", to_state="completed", at=created - timedelta(days=2)
                )
            ],
        )
    )
    await store.put_tasks(
        [
            TaskRecord(
                id="t-0",
                job_id="j-0",
                role="trainer",
                index=0,
                node_id="n-1",
                state="completed",
                attempt=1,
                transitions=_moves(
                    ("pending", "scheduled", 0),
                    ("scheduled", "running", 0.2),
                    ("running", "completed", 9),
                ),
            )
        ]
    )
    await store.append_metrics(
        [MetricRecord(job_id="j-0", task_id="t-0", key="acc", value=0.5, step=s) for s in (1, 2, 3)]
    )
    for i, presence in enumerate(["online", "online", "offline"]):
        await store.create_node(
            NodeRecord(id=f"n-{i}", name=f"node-{i}", owner="u-1", enrolled=True, presence=presence)
        )
    await store.create_node(NodeRecord(id="n-x", name="never", owner="u-1"))

    metrics = ControllerMetrics(store, min_interval=0)
    await metrics.refresh()
    await metrics.refresh()  # a second pass observes no task start twice
    got = _samples(metrics)
    assert got[("flame_jobs", (("state", "completed"),))] == 3
    assert got[("flame_jobs", (("state", "running"),))] == 1
    assert got[("flame_jobs", (("state", "stopping"),))] == 0
    assert got[("flame_job_rounds", (("job_id", "j-0"),))] == 3
    assert got[("flame_job_rounds", (("job_id", "j-2"),))] == 0
    assert ("flame_job_rounds", (("job_id", "j-old"),)) not in got  # ended long ago
    assert ("flame_job_rounds", (("job_id", "j-4"),)) not in got  # never started
    assert got[("flame_task_start_seconds_count", (("started_by", "node"),))] == 1
    assert got[("flame_task_start_seconds_sum", (("started_by", "node"),))] == 0.2
    assert got[("flame_nodes", (("presence", "online"),))] == 2
    assert got[("flame_nodes", (("presence", "offline"),))] == 1
    assert got[("flame_nodes", (("presence", "unknown"),))] == 0
    # later scrapes read what was stored since the last: the highest step is kept
    await store.append_metrics(
        [MetricRecord(job_id="j-0", task_id="t-0", key="acc", value=0.6, step=s) for s in (7, 2)]
    )
    await metrics.refresh()
    assert _samples(metrics)[("flame_job_rounds", (("job_id", "j-0"),))] == 7
    await store.append_metrics([MetricRecord(job_id="j-0", task_id="t-1", key="acc", value=1)])
    await metrics.refresh()
    assert _samples(metrics)[("flame_job_rounds", (("job_id", "j-0"),))] == 7
