"""flamectl in-process (Typer's CliRunner) against a scripted apiserver (httpx.MockTransport).

The scripted server answers like the real one (problem+json errors, snake_case bodies) and lets
a job move through its states between polls, which the real stack only does with live nodes;
the e2e suite drives flamectl against the real controller and apiserver."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from flame.cli import common
from flame.cli.client import FlameClient
from flame.cli.config import Login, save_login
from flame.cli.main import app

SERVER = "http://flame.test"
TOKEN = "flm_user_test"


def problem(status: int, code: str, detail: str) -> httpx.Response:
    body = {"type": f"https://flame.dev/errors/{code}", "title": "x", "status": status,
            "detail": detail, "code": code}  # fmt: skip
    return httpx.Response(status, json=body, headers={"content-type": "application/problem+json"})


def job_body(state: str, reason: str = "", transitions: list[dict] | None = None) -> dict:
    return {
        "id": "j-1", "name": "digits", "owner": "u-1", "project_id": "", "design_id": "d-1",
        "code_version": 1, "spec": {"rounds": 3}, "state": state, "desired_state": "running",
        "reason": reason, "transitions": transitions or [], "version": 1,
        "created_at": "2026-01-01T00:00:00Z", "deadline": None,
    }  # fmt: skip


@dataclass
class ScriptedApi:
    """Job ``j-1`` walks through ``states`` (one per GET); each GET adds one round of metrics."""

    states: list[str] = field(
        default_factory=lambda: ["starting", "running", "running", "completed"]
    )
    reason: str = ""
    log_lines: list[str] = field(default_factory=list)
    extra_metrics: list[dict] = field(default_factory=list)
    gets: int = 0
    requests: list[httpx.Request] = field(default_factory=list)
    created: list[dict] = field(default_factory=list)  # jobs made with POST /v1/jobs
    pushed: list[bytes] = field(default_factory=list)  # code zips received

    def state(self) -> str:
        return self.states[min(self.gets, len(self.states) - 1)]

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.headers.get("authorization") != f"Bearer {TOKEN}":
            return problem(401, "unauthenticated", "unknown token")
        path = request.url.path
        if path == "/v1/whoami":
            return httpx.Response(200, json={"scope": "user", "subject": "u-1"})
        if path == "/v1/jobs/j-1":
            body = job_body(self.state(), self.reason if self.state() == "failed" else "")
            self.gets += 1
            return httpx.Response(200, json=body)
        if path == "/v1/jobs/j-1/metrics":
            rounds = min(self.gets, 3)
            metrics = [{"key": "accuracy", "value": 0.5 + r / 10, "step": r, "at": None}
                       for r in range(1, rounds + 1)] + self.extra_metrics  # fmt: skip
            after = int(request.url.params.get("after_seq", 0))  # a point's place, from 1
            return httpx.Response(
                200,
                json={
                    "metrics": metrics[after:],
                    "run_uri": "runs:/abc",
                    "model_uri": "models:/digits@best",
                    "last_seq": len(metrics),
                },
            )
        if path == "/v1/jobs/j-1/logs":
            after = int(request.url.params.get("after_seq", 0))
            # lines become visible as the job advances, two per poll of the job
            visible = self.log_lines[: 2 * (self.gets + 1)]
            if request.url.params.get("source"):  # a service's events, 2 older lines dropped
                source = request.url.params["source"]
                line = {"task_id": "", "stream": "service", "line": "job.started", "at": None,
                        "seq": 9, "source": source, "level": "warning"}  # fmt: skip
                fresh = [line] if after < 9 else []
                return httpx.Response(200, json={"lines": fresh, "last_seq": 9, "dropped": 2})
            lines = [{"task_id": "t-1", "stream": "stdout", "line": text, "at": None, "seq": i + 1}
                     for i, text in enumerate(visible) if i + 1 > after]  # fmt: skip
            return httpx.Response(200, json={"lines": lines, "last_seq": len(visible)})
        if path == "/v1/jobs/j-1/tasks":
            task = {"id": "t-1", "job_id": "j-1", "role": "trainer", "index": 0,
                    "node_id": "n-1", "dataset_id": "ds-1", "groups": {}, "state": "running",
                    "reason": "", "transitions": [], "version": 1, "attempt": 0,
                    "data_consumer": True}  # fmt: skip
            return httpx.Response(200, json={"items": [task]})
        if path == "/v1/designs/d-1" and request.method == "GET":
            schema = {"roles": [{"name": "trainer", "isDataConsumer": True}], "channels": []}
            body = {"id": "d-1", "name": "central", "version": 1, "schema": schema}
            return httpx.Response(200, json=body)
        if path == "/v1/designs/d-1/code" and request.method == "POST":
            self.pushed.append(request.read())
            body = {"design_id": "d-1", "version": len(self.pushed), "sha256": "ab" * 32,
                    "size_bytes": len(self.pushed[-1]), "roles": ["trainer"]}  # fmt: skip
            return httpx.Response(201, json=body)
        if path == "/v1/jobs" and request.method == "POST":
            body = json.loads(request.content)
            made = {**job_body("ready"), **body, "id": f"j-{len(self.created) + 2}"}
            made["desired_state"] = "ready"
            self.created.append(made)
            return httpx.Response(201, json=made)
        created = {f"/v1/jobs/{j['id']}/start": j for j in self.created}
        if path in created and request.method == "POST":
            return httpx.Response(200, json={**created[path], "desired_state": "running"})
        if path == "/v1/jobs" and request.method == "GET":
            return httpx.Response(
                200, json={"items": [job_body(self.state())], "next_page_token": ""}
            )
        if path.startswith("/v1/jobs/") or path.startswith("/v1/designs/"):
            return problem(
                404, "not_found", f"{path.split('/')[2][:-1]} {path.split('/')[3]!r} not found"
            )
        if path == "/v1/designs" and request.method == "POST":
            body = json.loads(request.content)
            if not body["schema"].get("roles"):
                return problem(400, "invalid_argument", "invalid design: roles: at least 1 item")
            return httpx.Response(201, json={**body, "id": "d-9", "owner": "u-1", "version": 1,
                                             "created_at": None})  # fmt: skip
        if path == "/v1/designs" and request.method == "GET":
            return httpx.Response(200, json={"items": [], "next_page_token": ""})
        return problem(404, "not_found", "no such route")


@dataclass
class Cli:
    api: ScriptedApi
    runner: CliRunner
    config: Path

    def __call__(self, *args: str, input: str | None = None) -> Any:
        return self.runner.invoke(app, list(args), input=input)


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cli]:
    api = ScriptedApi()
    transport = httpx.MockTransport(api.handle)
    config = tmp_path / "flame" / "config.yaml"
    monkeypatch.setenv("FLAME_CONFIG", str(config))
    monkeypatch.setenv("COLUMNS", "200")

    def client(base_url: str, token: str | None = None, **kw: Any) -> FlameClient:
        return FlameClient(base_url, token, transport=transport)

    monkeypatch.setattr(common, "FlameClient", client)
    monkeypatch.setattr("flame.cli.login.FlameClient", client)
    save_login(Login(server=SERVER, token=TOKEN), config)
    yield Cli(api, CliRunner(), config)
