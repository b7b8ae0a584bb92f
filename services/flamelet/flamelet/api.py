"""REST client for the apiserver's node-facing routes (docs/rest-api.md), node credential."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import httpx

from flame_service.connect import PLAINTEXT, Security, http_client
from flamelet.errors import ApiError, NotFound, Unauthorized, Unavailable
from flamelet.health import HealthSample


@dataclass(frozen=True)
class TaskInfo:
    id: str
    job_id: str
    role: str
    node_id: str
    state: str
    attempt: int
    dataset_id: str = ""

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TaskInfo:
        return cls(
            id=str(d["id"]),
            job_id=str(d.get("job_id", "")),
            role=str(d.get("role", "")),
            node_id=str(d.get("node_id", "")),
            state=str(d.get("state", "")),
            attempt=int(d.get("attempt", 0)),
            dataset_id=str(d.get("dataset_id", "")),
        )


@dataclass(frozen=True)
class TaskBundleMeta:
    task: TaskInfo
    config: dict[str, Any]  # the TaskConfig JSON object, passed through to the child
    code_sha256: str
    code_version: int


@dataclass(frozen=True)
class LogLine:
    task_id: str
    stream: str  # stdout | stderr | agent
    line: str
    at: datetime | None = None
    mark: int = 0  # where the line ends in the output (attempt * 10^12 + offset); 0: unknown


@dataclass(frozen=True)
class Enrolment:
    node_id: str
    credential: str
    notifier: str


@dataclass(frozen=True)
class DatasetCreated:
    id: str
    name: str
    extra: dict[str, Any] = field(default_factory=dict)


class AgentApi(Protocol):
    """What the agent needs from the apiserver (an in-test fake may implement it too)."""

    async def list_tasks(self) -> list[TaskInfo]: ...
    async def get_task(self, task_id: str) -> TaskBundleMeta: ...
    async def get_code(self, task_id: str) -> bytes: ...
    async def report_status(self, task_id: str, state: str, reason: str, attempt: int) -> None: ...
    async def append_logs(self, lines: list[LogLine]) -> None: ...
    async def report_health(self, sample: HealthSample) -> None: ...


def _raise_for(resp: httpx.Response) -> None:
    if resp.is_success:
        return
    try:
        body = resp.json()
        detail = str(body.get("detail") or body.get("title") or "")
        code = str(body.get("code") or "")
    except ValueError:
        detail, code = resp.text[:200], ""
    msg = f"{resp.request.method} {resp.request.url.path}: {resp.status_code} {detail}".strip()
    if resp.status_code == 401:
        raise Unauthorized(msg, resp.status_code, code or "unauthenticated")
    if resp.status_code == 404:
        raise NotFound(msg, resp.status_code, code or "not_found")
    if resp.status_code in (408, 429) or resp.status_code >= 500:
        raise Unavailable(msg)
    raise ApiError(msg, resp.status_code, code)


class RestClient:
    def __init__(
        self,
        server: str,
        credential: str | None = None,
        timeout: float = 60.0,
        security: Security = PLAINTEXT,
    ) -> None:
        self._http = http_client(server, security, token=credential, timeout=timeout)

    async def close(self) -> None:
        await self._http.aclose()

    async def _request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        try:
            resp = await self._http.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise Unavailable(f"{method} {path}: {type(exc).__name__}: {exc}") from exc
        _raise_for(resp)
        return resp

    async def enroll(self, enrolment_token: str, facts: dict[str, str]) -> Enrolment:
        resp = await self._request(
            "POST", "/v1/nodes/enroll", json={"enrolment_token": enrolment_token, "facts": facts}
        )
        body = resp.json()
        return Enrolment(
            node_id=body["node"]["id"], credential=body["credential"], notifier=body["notifier"]
        )

    async def register_dataset(
        self,
        name: str,
        realm: str,
        format: str,
        size_bytes: int,
        description: str = "",
        num_samples: int = 0,
    ) -> DatasetCreated:
        resp = await self._request(
            "POST",
            "/v1/agent/datasets",
            json={
                "name": name,
                "realm": realm,
                "format": format,
                "size_bytes": size_bytes,
                "num_samples": num_samples,
                "description": description,
            },
        )
        body = resp.json()
        return DatasetCreated(id=str(body.get("id", "")), name=str(body.get("name", name)))

    async def list_tasks(self) -> list[TaskInfo]:
        resp = await self._request("GET", "/v1/agent/tasks")
        return [TaskInfo.from_json(t) for t in resp.json().get("items", [])]

    async def get_task(self, task_id: str) -> TaskBundleMeta:
        body = (await self._request("GET", f"/v1/agent/tasks/{task_id}")).json()
        config = body.get("config")
        if not isinstance(config, dict):
            raise ApiError(f"task {task_id}: the bundle has no config object")
        code = body.get("code") or {}
        return TaskBundleMeta(
            task=TaskInfo.from_json(body["task"]),
            config=config,
            code_sha256=str(code.get("sha256", "")),
            code_version=int(code.get("version", 0)),
        )

    async def get_code(self, task_id: str) -> bytes:
        return (await self._request("GET", f"/v1/agent/tasks/{task_id}/code")).content

    async def report_status(self, task_id: str, state: str, reason: str, attempt: int) -> None:
        await self._request(
            "POST",
            f"/v1/agent/tasks/{task_id}/status",
            json={"state": state, "reason": reason[:4000], "attempt": attempt},
        )

    async def append_logs(self, lines: list[LogLine]) -> None:
        payload = [
            {
                "task_id": ln.task_id,
                "stream": ln.stream,
                "line": ln.line,
                **({"at": ln.at.isoformat()} if ln.at else {}),
                **({"mark": ln.mark} if ln.mark else {}),
            }
            for ln in lines
        ]
        await self._request("POST", "/v1/agent/logs", json={"lines": payload})

    async def report_health(self, sample: HealthSample) -> None:
        await self._request("POST", "/v1/agent/health", json=sample.to_json())
