"""The reconciler drives real jobs: sqlite store, local deployer processes, a gRPC notifier.

Most reconcilers here have a 60 s fallback timer, longer than any wait in these tests: every
wake-up they rely on is a kick, a process exit seen by the deployer, or a stored deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import re
import signal
import sys
import time
import zipfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import psutil
import pytest

from flame_controller.deployers.base import Deployer
from flame_controller.deployers.local import LocalDeployer, LocalDeployerSettings
from flame_controller.domain.context import Ctx
from flame_controller.domain.tokens import TaskCredentials
from flame_controller.jobs.builder import DatasetInfo, build_tasks, parse_design, parse_job_spec
from flame_controller.jobs.decisions import RestartPolicy
from flame_controller.jobs.reconciler import Reconciler
from flame_controller.jobs.states import task_transition
from flame_controller.store.base import Store
from flame_controller.store.factory import open_store
from flame_controller.store.records import (
    CodeRecord,
    DesignRecord,
    JobRecord,
    MetricRecord,
    NodeRecord,
    TaskRecord,
    utcnow,
)
from flame_proto.v1 import notifier_pb2, notifier_pb2_grpc
from flame_service.errors import Conflict
from flame_spec import dump

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "designs"

# The aggregator: exits with the code in release (0 by default) once "release" appears.
ROLE = r"""
import os, sys, time
from pathlib import Path
with open("starts.log", "a") as f:
    f.write(f"{os.getpid()}\n")
print("aggregator up", flush=True)
print("warming", file=sys.stderr, flush=True)
while not Path("release").exists():
    time.sleep(0.02)
sys.exit(int(Path("release").read_text() or 0))
"""


# -- a real gRPC notifier that records what the controller sends --------------------------------
@dataclass
class RecordingNotifier(notifier_pb2_grpc.NotifierServicer):
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (node, type, task)
    fail_next: int = 0

    async def Notify(
        self, request: notifier_pb2.NotifyRequest, context: grpc.aio.ServicerContext
    ) -> notifier_pb2.NotifyResponse:
        if self.fail_next > 0:
            self.fail_next -= 1
            await context.abort(grpc.StatusCode.UNAVAILABLE, "notifier restarting")
        kind = notifier_pb2.EventType.Name(request.event.type).removeprefix("EVENT_TYPE_")
        self.events.append((request.node_id, kind, request.event.task_id))
        return notifier_pb2.NotifyResponse(seq=len(self.events), delivered=True)

    def of(self, kind: str) -> list[tuple[str, str]]:
        return [(n, t) for n, k, t in self.events if k == kind]


@pytest.fixture
async def notifier() -> AsyncIterator[tuple[RecordingNotifier, str]]:
    servicer = RecordingNotifier()
    server = grpc.aio.server()
    notifier_pb2_grpc.add_NotifierServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield servicer, f"127.0.0.1:{port}"
    await server.stop(0)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = await open_store(f"sqlite:///{tmp_path / 'flame.db'}")
    yield s
    await s.close()


def code_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("aggregator/main.py", ROLE)
        zf.writestr("trainer/main.py", "print('trainers run on nodes')\n")
    return buf.getvalue()


async def create_job(store: Store, code: bytes | None = None, **spec_overrides: Any) -> JobRecord:
    fx = json.loads((FIXTURES / "central.json").read_text())
    design = parse_design(fx["design"])
    spec = parse_job_spec({**fx["job"], **spec_overrides})
    for d in fx["datasets"]:
        await store.create_node(
            NodeRecord(id=d["node_id"], name=d["node_id"], owner="u1", presence="online")
        )
    await store.create_design(
        DesignRecord(id="des-1", name="central", owner="u1", schema=dump(design))
    )
    blob = code if code is not None else code_zip()
    key = await store.put_blob(blob)
    await store.create_code(
        CodeRecord(
            design_id="des-1",
            version=1,
            sha256=hashlib.sha256(blob).hexdigest(),
            size_bytes=len(blob),
            roles=["aggregator", "trainer"],
            blob_key=key,
        )
    )
    job = await store.create_job(
        JobRecord(
            id="job-1",
            name="demo",
            owner="u1",
            design_id="des-1",
            code_version=1,
            spec=dump(spec),
        )
    )
    planned = build_tasks(
        job_id=job.id,
        job_name=job.name,
        owner="u1",
        design_name="central",
        design=design,
        spec=spec,
        datasets={d["id"]: DatasetInfo(**d) for d in fx["datasets"]},
        apiserver_url="http://127.0.0.1:1",
    )
    await store.put_tasks(
        [
            TaskRecord(
                id=p.id,
                job_id=job.id,
                role=p.role,
                index=p.index,
                node_id=p.node_id,
                dataset_id=p.dataset_id,
                groups=p.groups,
                data_consumer=p.data_consumer,
                config=p.config,
            )
            for p in planned
        ]
    )
    return job


def make_reconciler(
    store: Store, deployer: Deployer, notifier: str | None, **kwargs: Any
) -> Reconciler:
    return Reconciler(
        store, deployer, notifier, credentials=TaskCredentials(Ctx(store=store)), **kwargs
    )


def pid_of(task: TaskRecord) -> int | None:
    """The process a local deployer handle names."""
    return json.loads(task.handle)["pid"] if task.handle else None


def workdir_of(tmp_path: Path, task: TaskRecord) -> Path:
    return tmp_path / "data" / "tasks" / task.job_id / task.id


def make_deployer(tmp_path: Path) -> LocalDeployer:
    return LocalDeployer(
        tmp_path / "data",
        LocalDeployerSettings(
            python=sys.executable,
            launch_args=["code/aggregator/main.py"],
            stop_grace_seconds=2,
            # every start cold, whichever wins the race with the pool's first runner (the
            # deployer contract runs the warm path: tests/contract/test_deployers.py)
            warm_runners=0,
        ),
    )


async def eventually(
    pred: Callable[[], Awaitable[bool] | bool], timeout: float = 20.0, what: str = ""
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        got = pred()
        if not isinstance(got, bool):
            got = await got
        if got:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached before the deadline: {what}")
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def running(r: Reconciler) -> AsyncIterator[Reconciler]:
    task = asyncio.create_task(r.run())
    try:
        yield r
    finally:
        await r.stop()
        await task


async def set_desired(store: Store, r: Reconciler | None, desired: str) -> None:
    while True:
        job = await store.get_job("job-1")
        try:
            await store.cas_job(job.id, job.version, {"desired_state": desired})
            break
        except Conflict:
            continue
    if r is not None:
        r.kick("job-1")


async def report(store: Store, r: Reconciler, task_id: str, state: str, reason: str = "") -> None:
    """What the domain layer does on a flamelet status report."""
    while True:
        task = await store.get_task(task_id)
        t = task_transition(task, state, reason)  # type: ignore[arg-type]
        try:
            await store.cas_task(task.id, task.version, t.changes, t.record)
            break
        except Conflict:
            continue
    r.kick(task.job_id)


async def job_state(store: Store) -> str:
    return (await store.get_job("job-1")).state


async def tasks_by_role(store: Store) -> dict[str, list[TaskRecord]]:
    out: dict[str, list[TaskRecord]] = {}
    for t in await store.list_tasks(job_id="job-1"):
        out.setdefault(t.role, []).append(t)
    return out


async def aggregator(store: Store) -> TaskRecord:
    return (await tasks_by_role(store))["aggregator"][0]


def alive(pid: int | None) -> bool:
    try:
        return pid is not None and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


async def bring_to_running(store: Store, r: Reconciler, rec: RecordingNotifier) -> None:
    await set_desired(store, r, "running")
    await eventually(lambda: len(rec.of("START_TASK")) == 3, what="3 START_TASK events")
    await eventually(lambda: _state_is(aggregator(store), "running"), what="aggregator deployed")
    assert await job_state(store) == "deploying"  # trainers have not reported yet
    for t in (await tasks_by_role(store))["trainer"]:
        await report(store, r, t.id, "running")
    await eventually(lambda: _job_is(store, "running"), what="job running")


async def _state_is(task: Awaitable[TaskRecord], state: str) -> bool:
    return (await task).state == state


async def _job_is(store: Store, state: str) -> bool:
    return await job_state(store) == state


# -- tests ------------------------------------------------------------------------------------
async def test_job_runs_to_completion(tmp_path: Path, store: Store, notifier: Any) -> None:
    rec, address = notifier
    await create_job(store)
    r = make_reconciler(store, make_deployer(tmp_path), address, interval=60.0)
    async with running(r):
        await bring_to_running(store, r, rec)
        tasks = await tasks_by_role(store)
        assert sorted(rec.of("START_TASK")) == sorted((t.node_id, t.id) for t in tasks["trainer"])
        assert {t.state for t in tasks["trainer"]} == {"running"}
        agg = tasks["aggregator"][0]
        assert alive(pid_of(agg))
        workdir = workdir_of(tmp_path, agg)
        cfg = json.loads((workdir / "config.json").read_text())
        assert cfg["discovery"]["token"].startswith("flm_task_")  # a real per-job credential

        for t in tasks["trainer"]:
            await report(store, r, t.id, "completed")
        assert await job_state(store) == "running"  # the aggregator has not finished
        (workdir / "release").write_text("0")
        await eventually(lambda: _job_is(store, "completed"), what="job completed")

    job = await store.get_job("job-1")
    assert [(x.from_state, x.to_state) for x in job.transitions] == [
        ("ready", "starting"),
        ("starting", "deploying"),
        ("deploying", "running"),
        ("running", "completed"),
    ]
    assert job.reason == "every role completed"
    agg = await aggregator(store)
    assert agg.state == "completed"
    # the aggregator's output is in the store, for `flamectl job logs`
    lines = await store.read_logs("job-1", task_id=agg.id)
    assert {(x.stream, x.line) for x in lines} == {
        ("stdout", "aggregator up"),
        ("stderr", "warming"),
    }
    # the job is over: its task credentials no longer open anything
    tokens, _ = await store.list_tokens(subject="job-1", kind="task")
    assert tokens and all(t.revoked for t in tokens)
    assert rec.of("STOP_TASK") == []
    # level-triggered: another pass over a finished job changes nothing
    r2 = make_reconciler(store, make_deployer(tmp_path), address)
    await r2.reconcile_once()
    assert (await store.get_job("job-1")).version == job.version


async def test_restarted_reconciler_resumes_without_restarting_tasks(
    tmp_path: Path, store: Store, notifier: Any
) -> None:
    rec, address = notifier
    await create_job(store)
    r1 = make_reconciler(store, make_deployer(tmp_path), address, interval=60.0)
    async with running(r1):
        await bring_to_running(store, r1, rec)
    agg = await aggregator(store)
    assert alive(pid_of(agg))  # the controller went away; the aggregator did not

    r2 = make_reconciler(store, make_deployer(tmp_path), address, interval=60.0)
    async with running(r2):
        await r2.reconcile_once()
        again = await aggregator(store)
        assert (pid_of(again), again.state, again.attempt) == (pid_of(agg), "running", 1)
        workdir = workdir_of(tmp_path, agg)
        starts = workdir / "starts.log"
        await eventually(lambda: starts.exists() and starts.read_text() != "", what="started")
        assert len((workdir / "starts.log").read_text().split()) == 1
        assert len(rec.of("START_TASK")) == 3  # nodes are not told again
        for t in (await tasks_by_role(store))["trainer"]:
            await report(store, r2, t.id, "completed")
        (workdir / "release").write_text("0")
        await eventually(lambda: _job_is(store, "completed"), what="job completed after restart")


async def test_losing_trainers_below_min_trainers_fails_the_job(
    tmp_path: Path, store: Store, notifier: Any
) -> None:
    rec, address = notifier
    await create_job(store, min_trainers=3)
    r = make_reconciler(store, make_deployer(tmp_path), address, interval=60.0)
    async with running(r):
        await bring_to_running(store, r, rec)
        trainers = (await tasks_by_role(store))["trainer"]
        agg = await aggregator(store)
        await report(store, r, trainers[0].id, "failed", "exit code 1")
        await eventually(lambda: _job_is(store, "failed"), what="job failed")
        job = await store.get_job("job-1")
        assert "only 2 of 3 trainer tasks are left; min_trainers is 3" in job.reason
        await eventually(lambda: _all_ended(store), what="live tasks stopped after the failure")
        assert not alive(pid_of(agg))
    stops = rec.of("STOP_TASK")
    assert sorted(t for _, t in stops) == sorted(t.id for t in trainers[1:])
    states = {t.id: t.state for t in await store.list_tasks(job_id="job-1")}
    assert states[trainers[0].id] == "failed"
    assert states[agg.id] == "terminated"


async def _all_ended(store: Store) -> bool:
    tasks = await store.list_tasks(job_id="job-1")
    return all(t.state in ("completed", "failed", "terminated") for t in tasks)


QUICK_RESTARTS = RestartPolicy(max_restarts=2, backoff_initial=0.01, backoff_max=0.05)


def starts(tmp_path: Path, task: TaskRecord) -> list[int]:
    """The pids the aggregator's processes wrote into starts.log in its (one) task folder."""
    path = workdir_of(tmp_path, task) / "starts.log"
    return [int(x) for x in path.read_text().split()] if path.exists() else []


def role_process(task: TaskRecord) -> psutil.Process:
    """The task's own python process, below the run.sh (and sandbox) the handle names (its
    pid in starts.log is the one inside the sandbox's pid namespace): the role's script, or
    the warm runner that runs it (``python -m flame.warm``)."""
    below = psutil.Process(pid_of(task)).children(recursive=True)
    (proc,) = [
        p
        for p in below
        if "code/aggregator/main.py" in " ".join(p.cmdline())
        or p.cmdline()[1:3] == ["-m", "flame.warm"]
    ]
    return proc


def restarts_of(task: TaskRecord) -> list[str]:
    return [x.reason for x in task.transitions if (x.from_state, x.to_state) == ANEW]


ANEW = ("running", "scheduled")


async def test_a_failing_aggregator_fails_the_job_once_its_restarts_are_used_up(
    tmp_path: Path, store: Store, notifier: Any
) -> None:
    rec, address = notifier
    await create_job(store)
    r = make_reconciler(
        store, make_deployer(tmp_path), address, interval=60.0, restarts=QUICK_RESTARTS
    )
    async with running(r):
        await bring_to_running(store, r, rec)
        agg = await aggregator(store)
        (workdir_of(tmp_path, agg) / "release").write_text("7")
        await eventually(lambda: _job_is(store, "failed"), what="job failed")
        await eventually(lambda: _all_ended(store), what="trainers stopped")
    job = await store.get_job("job-1")
    assert job.reason == (
        f"task {agg.id} (aggregator) failed: exit code 7 (no restart left after 2)"
    )
    agg = await aggregator(store)
    assert len(starts(tmp_path, agg)) == 3 and agg.attempt == 3
    assert restarts_of(agg) == [
        Match(r"restart 1 of 2: attempt 1 ended \(exit code 7\); next attempt in 0\.0\ds"),
        Match(r"restart 2 of 2: attempt 2 ended \(exit code 7\); next attempt in 0\.0\ds"),
    ]
    assert len(rec.of("STOP_TASK")) == 3


async def test_a_killed_aggregator_is_started_again_in_its_task_folder(
    tmp_path: Path, store: Store, notifier: Any
) -> None:
    rec, address = notifier
    await create_job(store)
    r = make_reconciler(
        store, make_deployer(tmp_path), address, interval=60.0, restarts=QUICK_RESTARTS
    )
    async with running(r):
        await bring_to_running(store, r, rec)
        agg = await aggregator(store)
        await eventually(lambda: len(starts(tmp_path, agg)) == 1, what="aggregator up")
        await store.update_task(agg.id, {"endpoint": "127.0.0.1:9"})  # what it registered
        role_process(await aggregator(store)).send_signal(signal.SIGKILL)
        await eventually(lambda: len(starts(tmp_path, agg)) == 2, what="aggregator restarted")
        await eventually(lambda: _state_is(aggregator(store), "running"), what="running again")
        again = await aggregator(store)
        assert again.attempt == 2 and again.endpoint is None  # its peers wait for the new one
        assert restarts_of(again) == [
            Match(r"restart 1 of 2: attempt 1 ended \(killed by SIGKILL\); next attempt in .*")
        ]
        assert await job_state(store) == "running"
        for t in (await tasks_by_role(store))["trainer"]:
            await report(store, r, t.id, "completed")
        (workdir_of(tmp_path, agg) / "release").write_text("0")
        await eventually(lambda: _job_is(store, "completed"), what="job completed")
    assert rec.of("STOP_TASK") == []


@pytest.mark.parametrize("reporter", ["itself", "another task"])
async def test_restarts_are_counted_in_a_row_without_progress(
    tmp_path: Path, store: Store, notifier: Any, reporter: str
) -> None:
    """An aggregator whose job reports a new round between its crashes is restarted every
    time; the limit is for crash loops. The round may come from another task (a middle
    aggregator reports no metrics: the top one does)."""
    rec, address = notifier
    await create_job(store)
    r = make_reconciler(
        store, make_deployer(tmp_path), address, interval=60.0, restarts=QUICK_RESTARTS
    )
    async with running(r):
        await bring_to_running(store, r, rec)
        agg = await aggregator(store)
        for kill in range(1, 5):  # twice the limit of 2
            await eventually(lambda k=kill: len(starts(tmp_path, agg)) == k, what="started")
            await eventually(lambda: _state_is(aggregator(store), "running"), what="running")
            # this attempt finishes a round (its metrics reach the control plane), then dies
            by = agg.id if reporter == "itself" else "top-aggregator-0"
            metric = MetricRecord(job_id="job-1", task_id=by, key="accuracy", value=0.5)
            await store.append_metrics([metric.model_copy(update={"step": kill})])
            role_process(await aggregator(store)).send_signal(signal.SIGKILL)
        await eventually(lambda: len(starts(tmp_path, agg)) == 5, what="fifth start")
        await eventually(lambda: _state_is(aggregator(store), "running"), what="running")
        assert await job_state(store) == "running"
        again = await aggregator(store)
        assert [x.split(":")[0] for x in restarts_of(again)] == ["restart 1 of 2"] * 4
        # now a crash loop: no round between the deaths (the last restart was the first of it)
        for kill in range(5, 7):
            await eventually(lambda k=kill: len(starts(tmp_path, agg)) == k, what="started")
            await eventually(lambda: _state_is(aggregator(store), "running"), what="running")
            role_process(await aggregator(store)).send_signal(signal.SIGKILL)
            if kill < 6:
                await eventually(lambda k=kill: len(starts(tmp_path, agg)) == k + 1, what="next")
        await eventually(lambda: _job_is(store, "failed"), what="job failed")
    job = await store.get_job("job-1")
    assert job.reason == (
        f"task {agg.id} (aggregator) failed: killed by SIGKILL (no restart left after 2)"
    )
    assert [x.split(":")[0] for x in restarts_of(await aggregator(store))][-2:] == [
        "restart 1 of 2",
        "restart 2 of 2",
    ]


async def test_an_aggregator_that_lost_its_quorum_is_not_restarted(
    tmp_path: Path, store: Store, notifier: Any
) -> None:
    rec, address = notifier
    await create_job(store)
    r = make_reconciler(
        store, make_deployer(tmp_path), address, interval=60.0, restarts=QUICK_RESTARTS
    )
    async with running(r):
        await bring_to_running(store, r, rec)
        agg = await aggregator(store)
        (workdir_of(tmp_path, agg) / "release").write_text("3")  # flame.launch: quorum lost
        await eventually(lambda: _job_is(store, "failed"), what="job failed")
        await eventually(lambda: _all_ended(store), what="trainers stopped")
    agg = await aggregator(store)
    assert len(starts(tmp_path, agg)) == 1 and restarts_of(agg) == []
    assert (
        await store.get_job("job-1")
    ).reason == f"task {agg.id} (aggregator) failed: exit code 3"


@dataclass(frozen=True)
class Match:
    """Equal to any string the pattern matches in full (for reasons that carry a delay)."""

    pattern: str

    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and re.fullmatch(self.pattern, other) is not None

    def __hash__(self) -> int:
        return hash(self.pattern)


async def test_max_run_time_terminates_the_job(tmp_path: Path, store: Store, notifier: Any) -> None:
    rec, address = notifier
    await create_job(store, max_run_time=1.0)
    r = make_reconciler(store, make_deployer(tmp_path), address, interval=30.0)
    async with running(r):
        await set_desired(store, r, "running")
        await eventually(lambda: _state_is(aggregator(store), "running"), what="deployed")
        agg = await aggregator(store)
        job = await store.get_job("job-1")
        assert job.started_at is not None and job.deadline is not None
        assert (job.deadline - job.started_at).total_seconds() == pytest.approx(1.0)
        assert job.next_check_at == job.deadline  # stored, so a restart honours it
        # no kick: the stored deadline alone wakes the reconciler (its timer is 30 s)
        await eventually(lambda: _job_is(store, "terminated"), what="terminated at deadline")
    job = await store.get_job("job-1")
    assert "max_run_time of 1.0s exceeded" in job.reason
    assert [x.to_state for x in job.transitions][-2:] == ["stopping", "terminated"]
    assert not alive(pid_of(agg))
    assert len(rec.of("STOP_TASK")) == 3
    assert {t.state for t in await store.list_tasks(job_id="job-1")} == {"terminated"}


async def test_stop_terminates_everything(tmp_path: Path, store: Store, notifier: Any) -> None:
    rec, address = notifier
    await create_job(store)
    r = make_reconciler(store, make_deployer(tmp_path), address, interval=60.0)
    async with running(r):
        await bring_to_running(store, r, rec)
        agg = await aggregator(store)
        await set_desired(store, r, "stopped")
        await eventually(lambda: _job_is(store, "terminated"), what="terminated")
    assert not alive(pid_of(agg))
    trainers = (await tasks_by_role(store))["trainer"]
    assert sorted(rec.of("STOP_TASK")) == sorted((t.node_id, t.id) for t in trainers)
    assert {t.state for t in await store.list_tasks(job_id="job-1")} == {"terminated"}
    job = await store.get_job("job-1")
    assert [x.to_state for x in job.transitions][-2:] == ["stopping", "terminated"]


async def test_stopping_a_job_that_never_started(
    tmp_path: Path, store: Store, notifier: Any
) -> None:
    rec, address = notifier
    await create_job(store)
    r = make_reconciler(store, make_deployer(tmp_path), address)
    await r.reconcile_once()
    assert await job_state(store) == "ready"  # not started: left alone
    await set_desired(store, None, "stopped")
    await r.reconcile_once()
    assert await job_state(store) == "terminated"
    assert {t.state for t in await store.list_tasks(job_id="job-1")} == {"terminated"}
    assert rec.events == []
    assert not (tmp_path / "data" / "tasks").exists()  # nothing was deployed


async def test_notifier_outage_is_retried(tmp_path: Path, store: Store, notifier: Any) -> None:
    rec, address = notifier
    rec.fail_next = 2
    await create_job(store)
    r = make_reconciler(store, make_deployer(tmp_path), address, interval=0.05, retry_delay=0.05)
    async with running(r):
        await set_desired(store, r, "running")
        await eventually(lambda: len(rec.of("START_TASK")) == 3, what="events after outage")
        await eventually(lambda: _all_notified(store), what="notifications recorded")
        trainers = (await tasks_by_role(store))["trainer"]
        assert all(t.state == "scheduled" for t in trainers)
    assert rec.fail_next == 0


async def test_unreachable_notifier_leaves_tasks_scheduled_for_polling(
    tmp_path: Path, store: Store
) -> None:
    await create_job(store)
    r = make_reconciler(store, make_deployer(tmp_path), "127.0.0.1:9", retry_delay=0.05)
    async with running(r):
        await set_desired(store, r, "running")
        await eventually(
            lambda: _all_trainers(store, "scheduled"), what="trainers scheduled without notifier"
        )
        await eventually(lambda: _state_is(aggregator(store), "running"), what="aggregator")
        trainers = (await tasks_by_role(store))["trainer"]
        assert not any(t.info.get("notified") for t in trainers)
        await set_desired(store, r, "stopped")
        await eventually(lambda: _job_is(store, "stopping"), what="stopping")
        agg = await aggregator(store)
        # the aggregator is stopped; the STOP events cannot be sent: the job waits, retrying
        await eventually(lambda: _state_is(aggregator(store), "terminated"), what="agg stopped")
        assert not alive(pid_of(agg))
        assert await job_state(store) == "stopping"
        assert await _all_trainers(store, "scheduled")
    # a reconciler without a notifier (nodes poll ListAssignedTasks) finishes the stop
    r2 = make_reconciler(store, make_deployer(tmp_path), None)
    await r2.reconcile_job("job-1")
    assert await job_state(store) == "terminated"
    assert await _all_trainers(store, "terminated")


async def _all_trainers(store: Store, state: str) -> bool:
    return all(t.state == state for t in (await tasks_by_role(store))["trainer"])


async def test_missing_code_fails_the_job(tmp_path: Path, store: Store, notifier: Any) -> None:
    rec, address = notifier
    await create_job(store)
    await store.delete_code("des-1", 1)
    r = make_reconciler(store, make_deployer(tmp_path), address)
    await set_desired(store, None, "running")
    await r.reconcile_job("job-1")
    job = await store.get_job("job-1")
    assert job.state == "failed"
    assert "code version 1 of design des-1 is gone" in job.reason
    assert {t.state for t in await store.list_tasks(job_id="job-1")} == {"terminated"}
    assert rec.events == []


async def _all_notified(store: Store) -> bool:
    return all(t.info.get("notified") for t in (await tasks_by_role(store))["trainer"])


async def test_an_offline_node_fails_nothing_while_the_rest_of_the_job_runs(
    tmp_path: Path, store: Store, notifier: Any
) -> None:
    rec, address = notifier
    await create_job(store)  # min_trainers 2 of 3
    r = make_reconciler(store, make_deployer(tmp_path), address, interval=60.0, node_grace=0.3)
    async with running(r):
        await bring_to_running(store, r, rec)
        trainers = (await tasks_by_role(store))["trainer"]
        lost = trainers[1]
        assert lost.node_id is not None
        # the notifier reports the node's agent gone, long past the grace period
        await store.update_node(lost.node_id, {"presence": "offline", "last_seen": utcnow()})
        r.kick()
        await asyncio.sleep(0.6)
        await r.reconcile_job("job-1")
        assert (await store.get_task(lost.id)).state == "running"  # its process may run on
        assert await job_state(store) == "running"
        for t in (trainers[0], trainers[2]):
            await report(store, r, t.id, "completed")
        agg = await aggregator(store)
        (workdir_of(tmp_path, agg) / "release").write_text("0")
        # nothing else is live: the task of the node that stayed away is given up, not failed
        await eventually(lambda: _job_is(store, "completed"), what="completed without the node")
    gone = await store.get_task(lost.id)
    assert gone.state == "terminated"
    assert gone.reason.startswith(f"node {lost.node_id} offline since ")
    assert gone.reason.endswith("the rest of the job ended without its report")
    assert gone.info["given_up"] is True  # its agent's report, when it is back, is taken


async def test_a_node_that_comes_back_reports_what_its_task_did(
    tmp_path: Path, store: Store, notifier: Any
) -> None:
    rec, address = notifier
    await create_job(store)
    r = make_reconciler(store, make_deployer(tmp_path), address, interval=60.0, node_grace=0.3)
    async with running(r):
        await bring_to_running(store, r, rec)
        trainers = (await tasks_by_role(store))["trainer"]
        away = trainers[0]
        assert away.node_id is not None
        await store.update_node(away.node_id, {"presence": "offline", "last_seen": utcnow()})
        r.kick()
        await asyncio.sleep(0.6)
        await r.reconcile_job("job-1")
        for t in trainers:  # the agent is back: its ledger says the trainer exited 0
            if t is away:
                await store.update_node(away.node_id, {"presence": "online"})
            await report(store, r, t.id, "completed")
        agg = await aggregator(store)
        (workdir_of(tmp_path, agg) / "release").write_text("0")
        await eventually(lambda: _job_is(store, "completed"), what="job completed")
    states = {t.id: t.state for t in await store.list_tasks(job_id="job-1")}
    assert set(states.values()) == {"completed"}, states


async def test_a_deleted_node_fails_its_task_at_once(
    tmp_path: Path, store: Store, notifier: Any
) -> None:
    rec, address = notifier
    await create_job(store)
    r = make_reconciler(store, make_deployer(tmp_path), address, interval=60.0, node_grace=60.0)
    async with running(r):
        await bring_to_running(store, r, rec)
        gone = (await tasks_by_role(store))["trainer"][2]
        assert gone.node_id is not None
        await store.update_node(gone.node_id, {"revoked": True})
        r.kick()
        await eventually(lambda: _state_is(store.get_task(gone.id), "failed"), what="failed")
        assert (await store.get_task(gone.id)).reason == f"node {gone.node_id} was revoked"
        assert await job_state(store) == "running"  # 2 of 3 left: quorum holds
        await set_desired(store, r, "stopped")
        await eventually(lambda: _job_is(store, "terminated"), what="stopped")


async def test_a_short_absence_is_waited_out(tmp_path: Path, store: Store, notifier: Any) -> None:
    rec, address = notifier
    await create_job(store)
    r = make_reconciler(store, make_deployer(tmp_path), address, interval=60.0, node_grace=60.0)
    async with running(r):
        await bring_to_running(store, r, rec)
        trainer = (await tasks_by_role(store))["trainer"][0]
        assert trainer.node_id is not None
        await store.update_node(trainer.node_id, {"presence": "offline", "last_seen": utcnow()})
        delay = await r.reconcile_job("job-1")
        assert 0 < delay <= 60.0
        assert (await store.get_task(trainer.id)).state == "running"
        await set_desired(store, r, "stopped")
        await eventually(lambda: _job_is(store, "terminated"), what="stopped")


async def test_tracking_is_set_up_beside_the_deployment_retried_and_redone_after_a_restart(
    tmp_path: Path, store: Store, notifier: Any
) -> None:
    """The job's account, experiment and model on the tracking server are made while its
    tasks deploy, not before: a tracking server that is slow or down holds up nothing (the
    aggregator waits for its account); a failed set-up is tried again, and a restarted
    controller makes sure of them again for the jobs still running."""
    rec, address = notifier
    await create_job(store)
    calls: list[str] = []
    release = asyncio.Event()

    async def slow_then_down_then_up(job: JobRecord) -> None:
        calls.append(job.id)
        if len(calls) == 1:
            await release.wait()  # a slow tracking server
            raise RuntimeError("tracking server unavailable")

    r = make_reconciler(
        store, make_deployer(tmp_path), address, interval=60.0, tracking=slow_then_down_then_up
    )
    async with running(r):
        await bring_to_running(store, r, rec)  # while the first set-up still waits
        assert calls == ["job-1"]
        release.set()  # it fails; the reconciler tries again after a backoff
        await eventually(lambda: len(calls) == 2, what="set-up tried again")
        await r.reconcile_once()
        assert len(calls) == 2  # done: not again in this controller's life
    r2 = make_reconciler(
        store, make_deployer(tmp_path), address, interval=60.0, tracking=slow_then_down_then_up
    )
    async with running(r2):
        await eventually(lambda: len(calls) == 3, what="set-up made sure of after a restart")
        agg = await aggregator(store)
        await set_desired(store, r2, "stopped")
        await eventually(lambda: _job_is(store, "terminated"), what="terminated")
    assert not alive(pid_of(agg))
