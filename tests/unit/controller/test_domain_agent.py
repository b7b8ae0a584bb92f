"""Node-facing domain operations against a real SQLite store: task status, logs, metrics,
endpoints, task credentials, presence."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from flame_controller.domain import (
    agent,
    code,
    datasets,
    designs,
    jobs,
    nodes,
    service_logs,
    tokens,
    users,
)
from flame_controller.domain.context import Ctx
from flame_controller.domain.results import NewLogLine, NewMetric
from flame_controller.jobs.states import task_transition
from flame_controller.store.base import LogRetention, Store
from flame_controller.store.records import JobRecord, TaskRecord, utcnow
from flame_service.auth import Caller
from flame_service.errors import (
    Conflict,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
)
from flame_service.logship import ShippedLine
from flame_spec import TaskConfig

from .conftest import central_code, design_json

ADMIN = Caller("admin", "root")


@dataclass
class Kicks:
    jobs: list[str] = field(default_factory=list)

    def __call__(self, job_id: str) -> None:
        self.jobs.append(job_id)


@dataclass
class World:
    ctx: Ctx
    kicks: Kicks
    alice: Caller
    node: Caller
    other_node: Caller
    job: JobRecord
    trainers: list[TaskRecord]
    aggregator: TaskRecord


async def _enrolled(ctx: Ctx, owner: Caller, name: str) -> Caller:
    created = await nodes.create_node(ctx, owner, name=name, project_id="", labels={})
    enrolled = await nodes.enroll_node(ctx, enrolment_token=created.secret, facts={"os": "linux"})
    return await tokens.authenticate(ctx, enrolled.secret)


@pytest.fixture
async def world(store: Store) -> World:
    kicks = Kicks()
    ctx = Ctx(store=store, apiserver_url="http://api:10100", kick=kicks)
    alice_rec = await users.create_user(ctx, ADMIN, name="alice", email="", admin=False)
    alice = Caller("user", alice_rec.id)
    node = await _enrolled(ctx, alice, "silo-a")
    other = await _enrolled(ctx, alice, "silo-b")
    for i, n in enumerate([node, node]):
        await datasets.create_dataset(
            ctx,
            n,
            name=f"d{i}",
            project_id="",
            node_id="",
            realm="",
            format="npz",
            size_bytes=1,
            uri="",
            description="",
            num_samples=50 + i,
        )
    design = await designs.create_design(
        ctx, alice, name="central", project_id="", description="", schema_json=design_json()
    )
    await code.push_code(ctx, alice, design_id=design.id, data=central_code())
    job = await jobs.create_job(
        ctx,
        alice,
        name="j",
        project_id="",
        design_id=design.id,
        code_version=0,
        spec_json=json.dumps({"datasets": {"default": ["d0", "d1"]}}),
    )
    tasks = await store.list_tasks(job_id=job.id)
    trainers = [t for t in tasks if t.role == "trainer"]
    aggregator = next(t for t in tasks if t.role == "aggregator")
    return World(ctx, kicks, alice, node, other, job, trainers, aggregator)


async def _schedule(store: Store, task: TaskRecord) -> TaskRecord:
    change = task_transition(task, "scheduled", "test")
    return await store.cas_task(task.id, task.version, change.changes, change.record)


async def test_a_node_reports_the_life_of_its_task_and_wakes_the_reconciler(world: World) -> None:
    ctx, task = world.ctx, world.trainers[0]
    with pytest.raises(FailedPrecondition, match="cannot go from 'pending' to 'running'"):
        await agent.report_task_status(
            ctx, world.node, task_id=task.id, state="running", reason="", attempt=0
        )
    await _schedule(ctx.store, task)
    running = await agent.report_task_status(
        ctx, world.node, task_id=task.id, state="running", reason="pid 42", attempt=0
    )
    assert running.state == "running" and running.transitions[-1].reason == "pid 42"
    again = await agent.report_task_status(
        ctx, world.node, task_id=task.id, state="running", reason="", attempt=0
    )
    assert again.version == running.version, "a repeated report changes nothing"
    done = await agent.report_task_status(
        ctx, world.node, task_id=task.id, state="completed", reason="", attempt=0
    )
    assert [(t.from_state, t.to_state) for t in done.transitions] == [
        ("pending", "scheduled"),
        ("scheduled", "running"),
        ("running", "completed"),
    ]
    assert world.kicks.jobs == [world.job.id, world.job.id]
    with pytest.raises(FailedPrecondition):
        await agent.report_task_status(
            ctx, world.node, task_id=task.id, state="failed", reason="", attempt=0
        )
    with pytest.raises(InvalidArgument, match="state must be one of"):
        await agent.report_task_status(
            ctx, world.node, task_id=task.id, state="terminated", reason="", attempt=0
        )


async def test_a_task_given_up_for_its_absent_node_takes_the_outcome_reported_later(
    world: World,
) -> None:
    ctx, store = world.ctx, world.ctx.store
    given_up, stopped = world.trainers[0], world.trainers[1]
    for task, info in ((given_up, {"given_up": True}), (stopped, {})):
        task = await _schedule(store, task)
        change = task_transition(task, "terminated", "node offline; job ended")
        await store.cas_task(task.id, task.version, {**change.changes, "info": info}, change.record)
    done = await agent.report_task_status(
        ctx, world.node, task_id=given_up.id, state="completed", reason="exit code 0", attempt=0
    )
    assert (done.state, done.reason) == ("completed", "exit code 0 (reported late)")
    assert [(t.from_state, t.to_state) for t in done.transitions][-1] == (
        "terminated",
        "completed",
    )
    assert "given_up" not in done.info
    with pytest.raises(FailedPrecondition):  # its outcome is known now: final again
        await agent.report_task_status(
            ctx, world.node, task_id=given_up.id, state="failed", reason="", attempt=0
        )
    with pytest.raises(FailedPrecondition):  # stopped by the job, not given up: final
        await agent.report_task_status(
            ctx, world.node, task_id=stopped.id, state="completed", reason="", attempt=0
        )
    assert (await store.get_task(stopped.id)).state == "terminated"


async def test_status_reports_check_the_node_and_the_attempt(world: World) -> None:
    ctx, task = world.ctx, await _schedule(world.ctx.store, world.trainers[1])
    with pytest.raises(NotFound):
        await agent.report_task_status(
            ctx, world.other_node, task_id=task.id, state="running", reason="", attempt=0
        )
    with pytest.raises(NotFound):
        await agent.report_task_status(
            ctx, world.node, task_id=world.aggregator.id, state="running", reason="", attempt=0
        )
    await ctx.store.update_task(task.id, {"attempt": 2})
    with pytest.raises(Conflict, match="stale"):
        await agent.report_task_status(
            ctx, world.node, task_id=task.id, state="running", reason="", attempt=1
        )
    with pytest.raises(InvalidArgument, match="has not been started"):
        await agent.report_task_status(
            ctx, world.node, task_id=task.id, state="running", reason="", attempt=3
        )
    assert (await ctx.store.get_task(task.id)).state == "scheduled"
    with pytest.raises(PermissionDenied):
        await agent.report_task_status(
            ctx, world.alice, task_id=task.id, state="running", reason="", attempt=2
        )


async def test_nodes_only_see_and_fetch_their_own_tasks(world: World) -> None:
    ctx = world.ctx
    mine = await agent.list_assigned_tasks(ctx, world.node)
    assert sorted(t.id for t in mine) == sorted(t.id for t in world.trainers)
    assert await agent.list_assigned_tasks(ctx, world.other_node) == []
    bundle = await agent.fetch_task(ctx, world.node, world.trainers[0].id)
    assert bundle.config["dataset"]["name"] in {"d0", "d1"} and bundle.code_zip == central_code()
    for task in world.trainers:
        with pytest.raises(NotFound):
            await agent.fetch_task(ctx, world.other_node, task.id)


async def test_the_aggregator_learns_the_most_samples_each_trainer_may_claim(
    world: World,
) -> None:
    caller = await tokens.authenticate(
        world.ctx, await tokens.issue_task_credential(world.ctx, world.job.id)
    )
    bundle = await agent.fetch_task(world.ctx, caller, world.aggregator.id)
    cfg = TaskConfig.model_validate(bundle.config)
    limits = cfg.sample_limits("param-channel")
    assert sorted(limits.values()) == [50, 51]
    assert set(limits) == {t.id for t in world.trainers}
    with pytest.raises(InvalidArgument, match="num_samples"):
        await datasets.create_dataset(
            world.ctx,
            world.node,
            name="negative",
            project_id="",
            node_id="",
            realm="",
            format="",
            size_bytes=0,
            uri="",
            description="",
            num_samples=-1,
        )


async def test_task_credential_reaches_only_the_jobs_deployer_run_tasks(world: World) -> None:
    ctx = world.ctx
    secret = await tokens.issue_task_credential(ctx, world.job.id)
    caller = await tokens.authenticate(ctx, secret)
    assert caller == Caller("node", f"job:{world.job.id}")
    assert [t.id for t in await agent.list_assigned_tasks(ctx, caller)] == [world.aggregator.id]
    bundle = await agent.fetch_task(ctx, caller, world.aggregator.id)
    assert bundle.task.role == "aggregator"
    with pytest.raises(NotFound):
        await agent.fetch_task(ctx, caller, world.trainers[0].id)
    with pytest.raises(PermissionDenied):
        await datasets.create_dataset(
            ctx,
            caller,
            name="x",
            project_id="",
            node_id="",
            realm="",
            format="",
            size_bytes=0,
            uri="",
            description="",
        )
    # Deleting the job revokes its task credentials.
    await jobs.delete_job(ctx, world.alice, world.job.id)
    with pytest.raises(Unauthenticated):
        await tokens.authenticate(ctx, secret)


async def test_logs_are_appended_by_the_node_and_read_by_the_owner(world: World) -> None:
    ctx, t0, t1 = world.ctx, world.trainers[0], world.trainers[1]
    last = await agent.append_logs(
        ctx,
        world.node,
        [
            NewLogLine(t0.id, "stdout", "epoch 1"),
            NewLogLine(t1.id, "stderr", "warn"),
            NewLogLine(t0.id, "stdout", "epoch 2"),
        ],
    )
    assert last == 3
    page = await agent.get_logs(
        ctx, world.alice, job_id=world.job.id, task_id="", after_seq=0, limit=0
    )
    assert [(x.task_id, x.line, x.seq) for x in page.lines] == [
        (t0.id, "epoch 1", 1),
        (t1.id, "warn", 2),
        (t0.id, "epoch 2", 3),
    ]
    follow = await agent.get_logs(
        ctx, world.alice, job_id=world.job.id, task_id=t0.id, after_seq=1, limit=10
    )
    assert [x.line for x in follow.lines] == ["epoch 2"] and follow.last_seq == 3
    empty = await agent.get_logs(
        ctx, world.alice, job_id=world.job.id, task_id="", after_seq=3, limit=10
    )
    assert empty.lines == [] and empty.last_seq == 3
    with pytest.raises(NotFound):
        await agent.append_logs(ctx, world.other_node, [NewLogLine(t0.id, "stdout", "spoof")])
    with pytest.raises(InvalidArgument, match="stream"):
        await agent.append_logs(ctx, world.node, [NewLogLine(t0.id, "stdin", "x")])
    assert (
        len(
            (
                await agent.get_logs(
                    ctx, world.alice, job_id=world.job.id, task_id="", after_seq=0, limit=0
                )
            ).lines
        )
        == 3
    )
    mine = await agent.get_logs(ctx, world.node, job_id="", task_id=t1.id, after_seq=0, limit=0)
    assert [x.line for x in mine.lines] == ["warn"]


async def test_service_events_join_the_task_output_and_filter(world: World) -> None:
    ctx, t0 = world.ctx, world.trainers[0]
    await agent.append_logs(ctx, world.node, [NewLogLine(t0.id, "stdout", "epoch 1")])
    kept = await service_logs.append_service_logs(
        ctx,
        "notifier",
        [
            ShippedLine(world.job.id, "info", "event.queued seq=1", t0.id, t0.node_id or ""),
            ShippedLine("no-such-job", "info", "event.queued seq=2"),  # left out
            ShippedLine(world.job.id, "WARNING", "event.dropped seq=3", t0.id),
        ],
    )
    assert kept == 2
    await service_logs.append_service_logs(
        ctx, "controller", [ShippedLine(world.job.id, "error", "job.failed reason=x")]
    )

    async def read(**filters: str) -> list[tuple[str, str, str]]:
        page = await agent.get_logs(
            ctx, world.alice, job_id=world.job.id, task_id="", after_seq=0, limit=0, **filters
        )
        assert page.dropped == 0
        return [(x.source, x.level, x.line.split()[0]) for x in page.lines]

    assert await read() == [
        ("task", "", "epoch"),
        ("notifier", "info", "event.queued"),
        ("notifier", "warning", "event.dropped"),
        ("controller", "error", "job.failed"),
    ]
    assert await read(source="controller") == [("controller", "error", "job.failed")]
    assert await read(min_level="warning") == [
        ("notifier", "warning", "event.dropped"),
        ("controller", "error", "job.failed"),
    ]
    assert [x[2] for x in await read(node_id=t0.node_id or "")] == ["epoch", "event.queued"]
    with pytest.raises(InvalidArgument, match="source"):
        await read(source="kernel")
    with pytest.raises(InvalidArgument, match="level"):
        await read(min_level="loud")
    with pytest.raises(InvalidArgument, match="source"):
        await service_logs.append_service_logs(
            ctx, "task", [ShippedLine(world.job.id, "info", "x")]
        )
    with pytest.raises(InvalidArgument, match="names its job"):
        await service_logs.append_service_logs(ctx, "apiserver", [ShippedLine("", "info", "x")])


async def test_lines_sent_again_after_a_lost_answer_are_stored_once(world: World) -> None:
    ctx, t0, t1 = world.ctx, world.trainers[0], world.trainers[1]

    def batch(task: str, stream: str, marks: range) -> list[NewLogLine]:
        return [NewLogLine(task, stream, f"{stream} {m}", mark=m) for m in marks]

    await agent.append_logs(ctx, world.node, batch(t0.id, "stdout", range(1, 6)))
    # the answer was lost: the flamelet sends the same lines again, and the next ones
    await agent.append_logs(
        ctx,
        world.node,
        batch(t0.id, "stdout", range(3, 9))
        + batch(t0.id, "stderr", range(1, 3))
        + batch(t1.id, "stdout", range(1, 3)),
    )
    await agent.append_logs(ctx, world.node, [NewLogLine(t0.id, "stdout", "unmarked")])
    page = await agent.get_logs(
        ctx, world.alice, job_id=world.job.id, task_id=t0.id, after_seq=0, limit=0
    )
    assert [x.line for x in page.lines] == [
        *(f"stdout {m}" for m in range(1, 9)),
        "stderr 1",
        "stderr 2",
        "unmarked",
    ]
    other = await agent.get_logs(
        ctx, world.alice, job_id=world.job.id, task_id=t1.id, after_seq=0, limit=0
    )
    assert [x.line for x in other.lines] == ["stdout 1", "stdout 2"]


async def test_dropped_lines_are_reported_with_the_page(world: World) -> None:
    ctx, t0 = world.ctx, world.trainers[0]
    ctx.store.log_retention = LogRetention(per_job=3)
    await agent.append_logs(
        ctx, world.node, [NewLogLine(t0.id, "stdout", f"line {i}") for i in range(5)]
    )
    page = await agent.get_logs(
        ctx, world.alice, job_id=world.job.id, task_id="", after_seq=0, limit=0
    )
    assert [x.line for x in page.lines] == ["line 2", "line 3", "line 4"]
    assert page.dropped == 2


async def _aggregator_reporting(world: World) -> Callable[..., Awaitable[None]]:
    """``send(*metrics, ctx=world.ctx)``: the job's aggregator reports, with its credential."""
    aggregator = await tokens.authenticate(
        world.ctx, await tokens.issue_task_credential(world.ctx, world.job.id)
    )

    async def send(*metrics: NewMetric, ctx: Ctx | None = None) -> None:
        await agent.report_metrics(
            ctx or world.ctx,
            aggregator,
            task_id=world.aggregator.id,
            metrics=metrics,
            run_uri="",
            model_uri="",
        )

    return send


async def test_metrics_and_run_links(world: World) -> None:
    ctx = world.ctx
    secret = await tokens.issue_task_credential(ctx, world.job.id)
    aggregator = await tokens.authenticate(ctx, secret)
    await agent.report_metrics(
        ctx,
        aggregator,
        task_id=world.aggregator.id,
        metrics=[NewMetric("accuracy", 0.5, 1), NewMetric("accuracy", 0.75, 2)],
        run_uri="http://mlflow/#/runs/1",
        model_uri="models:/j@best",
    )
    view = await agent.get_metrics(ctx, world.alice, world.job.id)
    assert [(m.key, m.value, m.step) for m in view.metrics] == [
        ("accuracy", 0.5, 1),
        ("accuracy", 0.75, 2),
    ]
    assert view.run_uri == "http://mlflow/#/runs/1" and view.model_uri == "models:/j@best"
    with pytest.raises(InvalidArgument, match="finite"):
        await agent.report_metrics(
            ctx,
            aggregator,
            task_id=world.aggregator.id,
            metrics=[NewMetric("loss", float("nan"), 3)],
            run_uri="",
            model_uri="",
        )
    assert len((await agent.get_metrics(ctx, world.alice, world.job.id)).metrics) == 2


async def test_a_poller_asks_for_the_points_after_those_it_has(world: World) -> None:
    ctx = world.ctx
    send = await _aggregator_reporting(world)
    await send(NewMetric("accuracy", 0.5, 1), NewMetric("loss", 2.0, 1))
    first = await agent.get_metrics(ctx, world.alice, world.job.id)
    assert len(first.metrics) == 2 and first.last_seq > 0
    again = await agent.get_metrics(ctx, world.alice, world.job.id, first.last_seq)
    assert again.metrics == [] and again.last_seq == first.last_seq
    await send(NewMetric("accuracy", 0.6, 2))
    new = await agent.get_metrics(ctx, world.alice, world.job.id, first.last_seq)
    assert [(m.key, m.step) for m in new.metrics] == [("accuracy", 2)]
    assert new.last_seq > first.last_seq
    with pytest.raises(InvalidArgument, match="position"):
        await agent.get_metrics(ctx, world.alice, world.job.id, -1)


async def test_a_metrics_report_sent_again_counts_once(world: World) -> None:
    ctx = world.ctx
    send = await _aggregator_reporting(world)
    await send(NewMetric("accuracy", 0.5, 0), NewMetric("loss", 2.0, 0))
    await send(NewMetric("accuracy", 0.5, 0), NewMetric("loss", 2.0, 0))  # its answer was lost
    # a restarted aggregator repeats step 1 (then sends step 2); the first value stays
    await send(NewMetric("accuracy", 0.7, 1))
    await send(NewMetric("accuracy", 0.9, 1), NewMetric("accuracy", 0.8, 2))
    view = await agent.get_metrics(ctx, world.alice, world.job.id)
    assert [(m.key, m.value, m.step) for m in view.metrics] == [
        ("accuracy", 0.5, 0),
        ("loss", 2.0, 0),
        ("accuracy", 0.7, 1),
        ("accuracy", 0.8, 2),
    ]


async def test_a_long_jobs_reports_read_what_came_since_not_the_whole_history(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each report is checked against what the task stored before; the controller reads only
    the metrics stored since its last look (reading them all made a long job's reports
    quadratic), and still counts a repeat once, also after a restart with nothing cached."""
    store = world.ctx.store
    read = 0

    def counting(method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            nonlocal read
            got = await method(*args, **kwargs)
            read += len(got[0] if isinstance(got, tuple) else got)
            return got

        return wrapper

    monkeypatch.setattr(store, "read_metrics", counting(store.read_metrics))
    monkeypatch.setattr(store, "metrics_since", counting(store.metrics_since))
    send = await _aggregator_reporting(world)
    rounds = 300
    for step in range(rounds):
        await send(NewMetric("accuracy", step / rounds, step), NewMetric("loss", 1, step))
    assert read <= 3 * 2 * rounds  # the whole history each time: about 90,000
    await send(NewMetric("accuracy", 2.0, 5))  # a restarted aggregator repeats
    restarted = Ctx(store=store)  # another controller process: nothing cached
    await send(NewMetric("accuracy", 3.0, 7), NewMetric("accuracy", 0.5, rounds), ctx=restarted)
    stored = [
        (m.value, m.step)
        for m in (await agent.get_metrics(world.ctx, world.alice, world.job.id)).metrics
        if m.key == "accuracy"
    ]
    assert stored == [(s / rounds, s) for s in range(rounds)] + [(0.5, rounds)]


async def test_a_metric_keeps_the_time_its_round_ended_but_never_a_future_one(
    world: World,
) -> None:
    # the reporter sends rounds in batches: each metric carries when it was measured
    ctx = world.ctx
    aggregator = await tokens.authenticate(
        ctx, await tokens.issue_task_credential(ctx, world.job.id)
    )
    measured = datetime.now(UTC) - timedelta(seconds=30)
    ahead = datetime.now(UTC) + timedelta(days=1)  # a node whose clock runs ahead
    await agent.report_metrics(
        ctx,
        aggregator,
        task_id=world.aggregator.id,
        metrics=[
            NewMetric("accuracy", 0.5, 1, at=measured),
            NewMetric("accuracy", 0.6, 2, at=ahead),
        ],
        run_uri="",
        model_uri="",
    )
    after = datetime.now(UTC)
    first, second = (await agent.get_metrics(ctx, world.alice, world.job.id)).metrics
    assert abs((first.at - measured).total_seconds()) < 0.01
    assert second.at <= after


async def test_endpoints_for_grpc_discovery(world: World) -> None:
    ctx, t0 = world.ctx, world.trainers[0]
    secret = await tokens.issue_task_credential(ctx, world.job.id)
    aggregator = await tokens.authenticate(ctx, secret)
    await agent.register_endpoint(
        ctx, aggregator, task_id=world.aggregator.id, endpoint="127.0.0.1:5001"
    )
    await agent.register_endpoint(ctx, world.node, task_id=t0.id, endpoint="silo-a.local:5002")
    with pytest.raises(InvalidArgument, match="host:port"):
        await agent.register_endpoint(ctx, world.node, task_id=t0.id, endpoint="no-port")
    with pytest.raises(NotFound):
        await agent.register_endpoint(ctx, world.other_node, task_id=t0.id, endpoint="evil:1")
    expected = {
        (world.aggregator.id, "aggregator", "127.0.0.1:5001"),
        (t0.id, "trainer", "silo-a.local:5002"),
    }
    for caller, ident in [
        (world.node, world.job.id),
        (aggregator, world.job.id),
        (world.node, t0.id),
        (world.alice, world.job.id),
    ]:
        got = await agent.list_endpoints(ctx, caller, ident)
        assert {(e.task_id, e.role, e.endpoint) for e in got} == expected
    with pytest.raises(NotFound):
        await agent.list_endpoints(ctx, world.other_node, world.job.id)


async def test_presence_reports(world: World) -> None:
    ctx, node_id = world.ctx, world.node.subject
    now = utcnow()
    await nodes.report_presence(ctx, None, node_id=node_id, presence="online", at=now)
    rec = await nodes.get_node(ctx, world.alice, node_id)
    assert rec.presence == "online" and rec.last_seen == now
    await nodes.report_presence(
        ctx, None, node_id=node_id, presence="offline", at=now - timedelta(seconds=5)
    )
    assert (await nodes.get_node(ctx, world.alice, node_id)).presence == "online", (
        "late report ignored"
    )
    await nodes.report_presence(ctx, world.node, node_id=node_id, presence="offline", at=None)
    assert (await nodes.get_node(ctx, world.alice, node_id)).presence == "offline"
    with pytest.raises(PermissionDenied):
        await nodes.report_presence(
            ctx, world.other_node, node_id=node_id, presence="online", at=None
        )
    with pytest.raises(NotFound):
        await nodes.report_presence(ctx, None, node_id="ghost", presence="online", at=None)
