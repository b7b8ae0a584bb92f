"""``GET /v1/jobs/{id}/events``: a job's changes pushed as server-sent events, through a real
uvicorn server in front of an in-test controller whose job moves on while the stream is open."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import httpx
import pytest
import uvicorn

from flame_apiserver import ApiserverSettings, create_app
from flame_apiserver.job_events import JobWatch
from flame_proto.v1 import common_pb2, control_pb2, control_pb2_grpc
from flame_service.auth import Caller
from flame_service.grpc_server import start_server
from tests.unit.apiserver.conftest import NODE_TOKEN, USER_TOKEN, FakeControlPlane

BOB_TOKEN = "flm_user_bob"


@dataclass
class MovingJob(FakeControlPlane):
    """One job, ``j-1`` of u-alice, whose tasks, metrics and logs the test changes."""

    job: control_pb2.Job = field(
        default_factory=lambda: control_pb2.Job(id="j-1", name="demo", owner="u-alice")
    )
    tasks: dict[str, control_pb2.Task] = field(default_factory=dict)
    metrics: list[control_pb2.Metric] = field(default_factory=list)
    logs: list[control_pb2.LogLine] = field(default_factory=list)
    metrics_asked_after: list[int] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def Authenticate(self, request, context):
        if request.token == BOB_TOKEN:
            return common_pb2.Principal(scope=common_pb2.SCOPE_USER, subject="u-bob")
        return await super().Authenticate(request, context)

    async def _visible(self, job_id: str, context: grpc.aio.ServicerContext) -> None:
        caller = Caller.from_metadata(context.invocation_metadata())
        if job_id != self.job.id or caller is None or caller.subject != self.job.owner:
            await self._fail(context, "NOT_FOUND", "not_found")

    async def GetJob(self, request, context):
        await self._visible(request.id, context)
        with self.lock:
            return control_pb2.Job().FromString(self.job.SerializeToString())

    async def ListTasks(self, request, context):
        await self._visible(request.id, context)
        with self.lock:
            return control_pb2.ListTasksResponse(items=list(self.tasks.values()))

    async def GetMetrics(self, request, context):
        await self._visible(request.id, context)
        with self.lock:  # a metric's position is its place in the list, from 1
            self.metrics_asked_after.append(request.after_seq)
            return control_pb2.MetricsResponse(
                metrics=self.metrics[request.after_seq :], last_seq=len(self.metrics)
            )

    async def GetLogs(self, request, context):
        await self._visible(request.job_id, context)
        with self.lock:
            lines = [
                x
                for x in self.logs
                if x.seq > request.after_seq and request.task_id in ("", x.task_id)
            ]
        return control_pb2.GetLogsResponse(
            lines=lines[: request.limit or 1000], last_seq=lines[-1].seq if lines else 0
        )

    def change(self, fn: Callable[[MovingJob], Any]) -> None:
        with self.lock:
            fn(self)


@dataclass
class Served:
    url: str
    fake: MovingJob


@pytest.fixture
def served() -> Iterator[Served]:
    fake = MovingJob()
    fake.job.state = "running"
    fake.tasks["t-agg"] = control_pb2.Task(
        id="t-agg", job_id="j-1", role="aggregator", state="scheduled"
    )
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    grpc_server, port = asyncio.run_coroutine_threadsafe(
        start_server(
            "127.0.0.1:0",
            [(control_pb2_grpc.add_ControlPlaneServicer_to_server, fake, "flame.v1.ControlPlane")],
        ),
        loop,
    ).result(30)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    app = create_app(
        ApiserverSettings(
            controller_address=f"127.0.0.1:{port}",
            events_poll_seconds=0.05,
            events_linger_seconds=0.3,
        )
    )
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    serving = asyncio.run_coroutine_threadsafe(server.serve(sockets=[sock]), loop)
    deadline = time.monotonic() + 60
    while not (server.started or serving.done()):
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield Served(f"http://127.0.0.1:{sock.getsockname()[1]}", fake)
    finally:
        server.should_exit = True
        serving.result(30)
        asyncio.run_coroutine_threadsafe(app.state.controller.close(), loop).result(30)
        asyncio.run_coroutine_threadsafe(grpc_server.stop(None), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        sock.close()


class EventReader:
    """Parses a text/event-stream response into (kind, data) pairs, one at a time."""

    def __init__(self, resp: httpx.Response) -> None:
        self.lines = resp.iter_lines()

    def next(self) -> tuple[str, dict[str, Any]]:
        kind, data = "", ""
        for line in self.lines:
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                data = line[6:]
            elif not line and kind:
                return kind, json.loads(data)
        raise AssertionError("the stream ended")

    def until(self, kind: str, pred: Callable[[dict[str, Any]], bool] = lambda _: True) -> list:
        seen = []
        while True:
            event = self.next()
            seen.append(event)
            if event[0] == kind and pred(event[1]):
                return seen


def metric(step: int, value: float) -> control_pb2.Metric:
    return control_pb2.Metric(key="accuracy", value=value, step=step)


def test_points_task_changes_and_logs_arrive_while_the_job_runs_then_the_stream_ends(
    served: Served,
) -> None:
    headers = {"Authorization": f"Bearer {USER_TOKEN}"}
    timeout = httpx.Timeout(60.0)
    with httpx.stream(
        "GET", f"{served.url}/v1/jobs/j-1/events", headers=headers, timeout=timeout
    ) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        events = EventReader(resp)
        first = events.until("job")
        assert ("task", first[0][1] | {"state": "scheduled"}) == first[0]
        assert first[-1][1]["state"] == "running"

        def round_one(f: MovingJob) -> None:
            f.tasks["t-agg"].state = "running"
            f.metrics.append(metric(1, 0.5))
            f.logs.append(control_pb2.LogLine(task_id="t-agg", line="round 1", seq=1))

        served.fake.change(round_one)
        got = events.until("log")
        kinds = {k: d for k, d in got}
        assert kinds["task"]["state"] == "running"
        assert kinds["metric"] == {"key": "accuracy", "value": 0.5, "step": 1, "at": None}
        assert kinds["log"]["line"] == "round 1" and kinds["log"]["seq"] == 1

        def finish(f: MovingJob) -> None:
            f.metrics += [metric(2, 0.7), metric(3, 0.9)]
            f.tasks["t-agg"].state = "completed"
            f.job.state = "completed"

        served.fake.change(finish)
        rest = events.until("end")
        steps = [d["step"] for k, d in rest if k == "metric"]
        assert steps == [2, 3]  # each point once, in round order, none sent twice
        order = [k for k, _ in rest]
        assert order.index("job") > max(i for i, k in enumerate(order) if k == "metric")
        assert rest[-1] == ("end", {"state": "completed"})
    # each poll asked for the points after those it had (not the job's whole history again)
    asked = served.fake.metrics_asked_after
    assert asked[0] == 0 and 1 in asked and asked == sorted(asked) and asked[-1] == 3


def test_the_task_filter_and_after_seq_choose_the_log_lines(served: Served) -> None:
    served.fake.change(lambda f: setattr(f.job, "state", "completed"))
    served.fake.change(
        lambda f: f.logs.extend(
            control_pb2.LogLine(task_id=t, line=f"{t}-{i}", seq=i)
            for i, t in enumerate(["a", "b", "a", "b", "a"], start=1)
        )
    )
    resp = httpx.get(
        f"{served.url}/v1/jobs/j-1/events?task_id=a&after_seq=1",
        headers={"Authorization": f"Bearer {USER_TOKEN}"},
        timeout=60,
    )
    blocks = [b.splitlines() for b in resp.text.split("\n\n") if "event: log" in b]
    lines = [json.loads(b[-1].removeprefix("data: "))["line"] for b in blocks]
    assert lines == ["a-3", "a-5"]


@pytest.mark.parametrize(
    ("token", "status", "code"),
    [
        (BOB_TOKEN, 404, "not_found"),
        (None, 401, "unauthenticated"),
        (NODE_TOKEN, 403, "permission_denied"),
    ],
)
def test_other_users_nodes_and_anonymous_callers_get_no_stream(
    served: Served, token: str | None, status: int, code: str
) -> None:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    resp = httpx.get(f"{served.url}/v1/jobs/j-1/events", headers=headers, timeout=60)
    assert resp.status_code == status
    assert resp.headers["content-type"].startswith("application/problem+json")
    assert resp.json()["code"] == code


def test_a_watch_sends_each_change_once() -> None:
    watch = JobWatch()
    task = control_pb2.Task(id="t", role="trainer", state="running", attempt=1)
    assert len(watch.task_events([task])) == 1
    assert watch.task_events([task]) == []
    task.attempt = 2
    assert [e.data["attempt"] for e in watch.task_events([task])] == [2]
    first = control_pb2.MetricsResponse(metrics=[metric(2, 1.0), metric(1, 0.5)], last_seq=2)
    assert [e.data["step"] for e in watch.metric_events(first)] == [1, 2]
    assert watch.metric_seq == 2  # the next read starts after the points sent
    assert watch.metric_events(first) == []
