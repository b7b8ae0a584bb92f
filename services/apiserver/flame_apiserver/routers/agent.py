"""Node-facing routes (scope node): a node or task credential only ever sees its own tasks."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any

from fastapi import Path, Response
from google.protobuf.timestamp_pb2 import Timestamp

from flame_apiserver.auth import Ctl, NodeCaller
from flame_apiserver.models import (
    AgentDataset,
    AppendLogs,
    CodeVersion,
    Dataset,
    Endpoint,
    Items,
    RegisterEndpoint,
    ReportHealth,
    ReportMetrics,
    Task,
    TaskBundle,
    TaskStatus,
)
from flame_apiserver.problems import ApiProblem
from flame_apiserver.routers.common import IdempotencyKey, v1_router
from flame_proto.v1 import control_pb2

router = v1_router("agent")
TaskId = Annotated[str, Path(min_length=1, max_length=256)]
ZIP_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/zip": {"schema": {"type": "string", "format": "binary"}}}}
}


def _config(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text) if text else {}
    except json.JSONDecodeError as exc:
        raise ApiProblem(500, "internal", "task config is not valid JSON") from exc
    if not isinstance(value, dict):
        raise ApiProblem(500, "internal", "task config is not a JSON object")
    return value


@router.post("/agent/datasets", status_code=201, response_model=Dataset)
async def register_dataset(
    body: AgentDataset, caller: NodeCaller, ctl: Ctl, key: IdempotencyKey = None
) -> Dataset:
    req = control_pb2.CreateDatasetRequest(node_id=caller.subject, **body.model_dump())
    return Dataset.from_pb(await ctl.call(ctl.stub.CreateDataset, req, caller, idempotency_key=key))


@router.get("/agent/tasks", response_model=Items[Task])
async def assigned_tasks(caller: NodeCaller, ctl: Ctl) -> Items[Task]:
    resp = await ctl.call(ctl.stub.ListAssignedTasks, control_pb2.Empty(), caller)
    return Items[Task](items=[Task.from_pb(t) for t in resp.items])


@router.get("/agent/tasks/{task_id}", response_model=TaskBundle)
async def fetch_task(task_id: TaskId, caller: NodeCaller, ctl: Ctl) -> TaskBundle:
    bundle = await ctl.call(ctl.stub.FetchTask, control_pb2.GetRequest(id=task_id), caller)
    return TaskBundle(
        task=Task.from_pb(bundle.task),
        config=_config(bundle.config_json),
        code=CodeVersion.from_pb(bundle.code),
    )


@router.get("/agent/tasks/{task_id}/code", response_class=Response, responses=ZIP_RESPONSE)
async def fetch_task_code(task_id: TaskId, caller: NodeCaller, ctl: Ctl) -> Response:
    bundle = await ctl.call(ctl.stub.FetchTask, control_pb2.GetRequest(id=task_id), caller)
    return Response(
        bundle.code_zip,
        media_type="application/zip",
        headers={"X-Flame-Sha256": bundle.code.sha256},
    )


@router.post("/agent/tasks/{task_id}/status", response_model=Task)
async def report_status(task_id: TaskId, body: TaskStatus, caller: NodeCaller, ctl: Ctl) -> Task:
    req = control_pb2.TaskStatusReport(
        task_id=task_id, state=body.state, reason=body.reason, attempt=body.attempt
    )
    return Task.from_pb(await ctl.call(ctl.stub.ReportTaskStatus, req, caller))


def _timestamp(at: datetime) -> Timestamp:
    value = Timestamp()
    value.FromDatetime(at)
    return value


@router.post("/agent/logs", status_code=204, response_class=Response)
async def append_logs(body: AppendLogs, caller: NodeCaller, ctl: Ctl) -> None:
    lines = []
    for item in body.lines:
        line = control_pb2.LogLine(
            task_id=item.task_id, stream=item.stream, line=item.line, mark=item.mark
        )
        if item.at is not None:
            line.at.CopyFrom(_timestamp(item.at))
        lines.append(line)
    await ctl.call(ctl.stub.AppendLogs, control_pb2.AppendLogsRequest(lines=lines), caller)


@router.post("/agent/health", status_code=204, response_class=Response)
async def report_health(body: ReportHealth, caller: NodeCaller, ctl: Ctl) -> None:
    await ctl.call(ctl.stub.ReportNodeHealth, body.to_pb(), caller)


@router.post("/agent/tasks/{task_id}/metrics", status_code=204, response_class=Response)
async def report_metrics(
    task_id: TaskId, body: ReportMetrics, caller: NodeCaller, ctl: Ctl
) -> None:
    req = control_pb2.MetricsReport(
        task_id=task_id,
        metrics=[
            control_pb2.Metric(
                key=m.key, value=m.value, step=m.step, at=_timestamp(m.at) if m.at else None
            )
            for m in body.metrics
        ],
        run_uri=body.run_uri,
        model_uri=body.model_uri,
    )
    await ctl.call(ctl.stub.ReportMetrics, req, caller)


@router.post("/agent/tasks/{task_id}/endpoint", status_code=204, response_class=Response)
async def register_endpoint(
    task_id: TaskId, body: RegisterEndpoint, caller: NodeCaller, ctl: Ctl
) -> None:
    req = control_pb2.EndpointRegistration(task_id=task_id, endpoint=body.endpoint)
    await ctl.call(ctl.stub.RegisterEndpoint, req, caller)


@router.get("/agent/tasks/{task_id}/peers", response_model=Items[Endpoint])
async def list_peers(task_id: TaskId, caller: NodeCaller, ctl: Ctl) -> Items[Endpoint]:
    # The controller resolves the task's job and checks this caller may see it.
    resp = await ctl.call(ctl.stub.ListEndpoints, control_pb2.GetRequest(id=task_id), caller)
    return Items[Endpoint](items=[Endpoint.from_pb(e) for e in resp.items])
