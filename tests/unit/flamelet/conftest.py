"""An in-test apiserver serving the node routes of docs/rest-api.md (unit tests only), an
in-memory event source, tiny task bundles and helpers."""

from __future__ import annotations

import asyncio
import hashlib
import io
import threading
import time
import zipfile
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from flamelet.agent import Agent
from flamelet.api import RestClient
from flamelet.events import CONNECTED, NodeEvent
from flamelet.home import DatasetRegistry, Identity, LocalDataset
from flamelet.settings import FlameletSettings

NODE = "node-1"
CRED = "flm_node_secret"


def problem(status: int, code: str, detail: str) -> JSONResponse:
    return JSONResponse(
        {
            "type": f"https://flame.dev/errors/{code}",
            "title": code,
            "status": status,
            "detail": detail,
            "code": code,
        },
        status_code=status,
        media_type="application/problem+json",
    )


def make_zip(files: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, text in files.items():
            zf.writestr(zipfile.ZipInfo(name), text)
    return buf.getvalue()


@dataclass
class FakeApiServer:
    url: str = ""
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    bundles: dict[str, dict[str, Any]] = field(default_factory=dict)
    statuses: list[tuple[str, str, str, int]] = field(default_factory=list)
    logs: list[dict[str, Any]] = field(default_factory=list)
    datasets: list[dict[str, Any]] = field(default_factory=list)
    fetches: Counter[str] = field(default_factory=Counter)
    revoked: bool = False
    keep_scheduled: bool = False  # ignore status reports in the task list (rerun attempts)
    enrolment_token: str = "enrol-1"
    unavailable: int = 0  # answer this many requests with 503 (an apiserver outage)
    requests: int = 0
    reject_logs: bool = False  # answer log uploads with 404 (the task was deleted meanwhile)
    hidden: set[str] = field(default_factory=set)  # listed, but 404 on fetch (another node)
    health: list[dict[str, Any]] = field(default_factory=list)  # samples the node reported

    def add_task(
        self,
        task_id: str,
        files: dict[str, str],
        *,
        node: str = NODE,
        role: str = "trainer",
        dataset: str | None = "digits",
        sha256: str | None = None,
        attempt: int = 0,
    ) -> None:
        code = make_zip(files)
        self.tasks[task_id] = {
            "id": task_id,
            "job_id": "job-1",
            "role": role,
            "index": 0,
            "node_id": node,
            "dataset_id": "ds-1",
            "groups": {},
            "state": "scheduled",
            "reason": "",
            "transitions": [],
            "version": 1,
            "attempt": attempt,
            "data_consumer": True,
        }
        config = {
            "job_id": "job-1",
            "job_name": "demo",
            "task_id": task_id,
            "role": role,
            "design": {"roles": [{"name": role, "isDataConsumer": True}]},
            "job": {"rounds": 1},
            "dataset": {"id": "ds-1", "name": dataset, "uri": "", "format": "npz"}
            if dataset
            else None,
            "discovery": {"kind": "control-plane", "url": self.url, "token": None},
        }
        self.bundles[task_id] = {
            "config": config,
            "zip": code,
            "sha256": sha256 or hashlib.sha256(code).hexdigest(),
        }

    def states(self, task_id: str) -> list[str]:
        return [s for t, s, _, _ in self.statuses if t == task_id]

    def log_lines(self, task_id: str, stream: str | None = None) -> list[str]:
        return [
            ln["line"]
            for ln in self.logs
            if ln["task_id"] == task_id and (stream is None or ln["stream"] == stream)
        ]

    def app(self) -> FastAPI:
        api = FastAPI()

        @api.middleware("http")
        async def outage(request: Request, call_next: Any) -> Any:
            self.requests += 1
            if self.unavailable > 0:
                self.unavailable -= 1
                return problem(503, "unavailable", "controller unreachable")
            return await call_next(request)

        def authorised(request: Request) -> bool:
            return request.headers.get("authorization") == f"Bearer {CRED}" and not self.revoked

        def visible(task_id: str) -> dict[str, Any] | None:
            t = self.tasks.get(task_id)
            return t if t and t["node_id"] == NODE and task_id not in self.hidden else None

        @api.post("/v1/nodes/enroll")
        async def enroll(body: dict[str, Any]) -> Any:
            if body.get("enrolment_token") != self.enrolment_token:
                return problem(401, "unauthenticated", "unknown enrolment token")
            return {
                "node": {"id": NODE, "name": "n"},
                "credential": CRED,
                "notifier": "127.0.0.1:1",
            }

        @api.post("/v1/agent/datasets", status_code=201)
        async def dataset(body: dict[str, Any], request: Request) -> Any:
            if not authorised(request):
                return problem(401, "unauthenticated", "bad credential")
            self.datasets.append(body)
            return {"id": f"ds-{len(self.datasets)}", "name": body["name"], "node_id": NODE}

        @api.get("/v1/agent/tasks")
        async def list_tasks(request: Request) -> Any:
            if not authorised(request):
                return problem(401, "unauthenticated", "bad credential")
            return {"items": list(self.tasks.values())}

        @api.get("/v1/agent/tasks/{task_id}")
        async def get_task(task_id: str, request: Request) -> Any:
            if not authorised(request):
                return problem(401, "unauthenticated", "bad credential")
            t = visible(task_id)
            if t is None:
                return problem(404, "not_found", "no such task")
            self.fetches[task_id] += 1
            b = self.bundles[task_id]
            return {
                "task": t,
                "config": b["config"],
                "code": {
                    "design_id": "d",
                    "version": 1,
                    "sha256": b["sha256"],
                    "size_bytes": len(b["zip"]),
                    "roles": [t["role"]],
                },
            }

        @api.get("/v1/agent/tasks/{task_id}/code")
        async def get_code(task_id: str, request: Request) -> Any:
            if not authorised(request):
                return problem(401, "unauthenticated", "bad credential")
            if visible(task_id) is None:
                return problem(404, "not_found", "no such task")
            return Response(self.bundles[task_id]["zip"], media_type="application/zip")

        @api.post("/v1/agent/tasks/{task_id}/status")
        async def status(task_id: str, body: dict[str, Any], request: Request) -> Any:
            if not authorised(request):
                return problem(401, "unauthenticated", "bad credential")
            t = visible(task_id)
            if t is None:
                return problem(404, "not_found", "no such task")
            self.statuses.append((task_id, body["state"], body["reason"], body["attempt"]))
            if not self.keep_scheduled:
                t["state"] = body["state"]
            return t

        @api.post("/v1/agent/health", response_model=None)
        async def health(body: dict[str, Any], request: Request) -> Any:
            if not authorised(request):
                return problem(401, "unauthenticated", "bad credential")
            self.health.append(body)
            return Response(status_code=204)

        @api.post("/v1/agent/logs", response_model=None)
        async def logs(body: dict[str, Any], request: Request) -> Any:
            if not authorised(request):
                return problem(401, "unauthenticated", "bad credential")
            if self.reject_logs:
                return problem(404, "not_found", "no such task")
            self.logs.extend(body["lines"])
            return Response(status_code=204)

        return api


@pytest.fixture
def fake_api() -> Iterator[FakeApiServer]:
    fake = FakeApiServer()
    server = uvicorn.Server(
        uvicorn.Config(fake.app(), host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "fake apiserver did not start"
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    fake.url = f"http://127.0.0.1:{port}"
    yield fake
    server.should_exit = True
    thread.join(10)


class FakeEvents:
    """An in-memory event source: yields ``connected``, then what the test puts."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[NodeEvent] = asyncio.Queue()
        self.acked: list[int] = []
        self.subscriptions: list[int] = []

    async def subscribe(self, after_seq: int) -> AsyncIterator[NodeEvent]:
        self.subscriptions.append(after_seq)
        yield NodeEvent(seq=0, kind=CONNECTED)
        while True:
            yield await self.queue.get()

    async def ack(self, seq: int) -> None:
        self.acked.append(seq)


def settings_for(home: Path, **over: Any) -> FlameletSettings:
    base: dict[str, Any] = {
        "home": home,
        "command": ["{python}", "code/{role}/main.py"],
        "poll_interval": 0.05,
        "resync_interval": 0.2,
        "backoff_initial": 0.05,
        "backoff_max": 0.5,
        "stop_grace": 2.0,
        # these roles report what they saw into the test's folders, which a sandbox hides;
        # test_sandbox.py runs the agent sandboxed
        "sandbox": "none",
    }
    base.update(over)
    return FlameletSettings(**base)


@dataclass
class Node:
    home: Path
    data: Path  # the registered dataset folder; task scripts write their traces into it
    fake: FakeApiServer

    def identity(self) -> Identity:
        return Identity(server=self.fake.url, node_id=NODE, credential=CRED, notifier="unused")

    def agent(self, events: Any = None, **over: Any) -> tuple[Agent, RestClient]:
        api = RestClient(self.fake.url, CRED)
        return Agent(
            self.identity(), api, events or FakeEvents(), settings_for(self.home, **over)
        ), api


@pytest.fixture
def node(tmp_path: Path, fake_api: FakeApiServer) -> Node:
    home, data = tmp_path / "home", tmp_path / "data"
    data.mkdir()
    DatasetRegistry(home).add(LocalDataset(name="digits", path=str(data), id="ds-1"))
    return Node(home=home, data=data, fake=fake_api)


async def eventually(check: Callable[[], Any], timeout: float = 15.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached before the deadline: {what or check}")
        await asyncio.sleep(0.02)


class Running:
    """Run an agent in the background for the duration of a block."""

    def __init__(self, agent: Agent, api: RestClient) -> None:
        self.agent, self.api = agent, api
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Running:
        self.task = asyncio.create_task(self.agent.run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.agent.stop()
        assert self.task is not None
        await asyncio.wait_for(self.task, 10)
        await self.api.close()
