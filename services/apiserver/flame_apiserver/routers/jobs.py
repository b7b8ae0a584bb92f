"""``/v1/jobs``: create, start/stop, tasks, logs and per-round metrics."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import Path, Query, Response

from flame_apiserver.auth import Ctl, UserCaller
from flame_apiserver.models import (
    CreateJob,
    Items,
    Job,
    LogLine,
    Logs,
    Metrics,
    Page,
    Task,
    UpdateJob,
)
from flame_apiserver.rendered import Rendered, json_response, metrics_response
from flame_apiserver.routers.common import IdempotencyKey, PageQuery, dump, v1_router
from flame_proto.v1 import control_pb2

router = v1_router("jobs")
_jobs = Rendered(Job)
_tasks = Rendered(Task)
Id = Annotated[str, Path(min_length=1, max_length=256)]


@router.post("/jobs", status_code=201, response_model=Job)
async def create_job(
    body: CreateJob, caller: UserCaller, ctl: Ctl, key: IdempotencyKey = None
) -> Job:
    req = control_pb2.CreateJobRequest(
        name=body.name,
        project_id=body.project_id,
        design_id=body.design_id,
        code_version=body.code_version,
        spec_json=dump(body.spec),
    )
    return Job.from_pb(await ctl.call(ctl.stub.CreateJob, req, caller, idempotency_key=key))


@router.get("/jobs", response_model=Page[Job])
async def list_jobs(page: PageQuery, caller: UserCaller, ctl: Ctl) -> Response:
    resp = await ctl.call(ctl.stub.ListJobs, page, caller)
    return json_response(_jobs, resp.items, next_page_token=resp.page.next_page_token)


@router.get("/jobs/{id}", response_model=Job)
async def get_job(id: Id, caller: UserCaller, ctl: Ctl) -> Job:
    return Job.from_pb(await ctl.call(ctl.stub.GetJob, control_pb2.GetRequest(id=id), caller))


@router.patch("/jobs/{id}", response_model=Job)
async def update_job(id: Id, body: UpdateJob, caller: UserCaller, ctl: Ctl) -> Job:
    req = control_pb2.UpdateJobRequest(id=id)
    if body.spec is not None:
        req.spec_json = dump(body.spec)
    if body.code_version is not None:
        req.code_version = body.code_version
    return Job.from_pb(await ctl.call(ctl.stub.UpdateJob, req, caller))


@router.delete("/jobs/{id}", status_code=204, response_class=Response)
async def delete_job(id: Id, caller: UserCaller, ctl: Ctl) -> None:
    await ctl.call(ctl.stub.DeleteJob, control_pb2.GetRequest(id=id), caller)


@router.post("/jobs/{id}/start", response_model=Job)
async def start_job(id: Id, caller: UserCaller, ctl: Ctl) -> Job:
    return Job.from_pb(await ctl.call(ctl.stub.StartJob, control_pb2.GetRequest(id=id), caller))


@router.post("/jobs/{id}/stop", response_model=Job)
async def stop_job(id: Id, caller: UserCaller, ctl: Ctl) -> Job:
    return Job.from_pb(await ctl.call(ctl.stub.StopJob, control_pb2.GetRequest(id=id), caller))


@router.get("/jobs/{id}/tasks", response_model=Items[Task])
async def list_tasks(id: Id, caller: UserCaller, ctl: Ctl) -> Response:
    resp = await ctl.call(ctl.stub.ListTasks, control_pb2.GetRequest(id=id), caller)
    return json_response(_tasks, resp.items)


@router.get("/jobs/{id}/logs", response_model=Logs)
async def get_logs(
    id: Id,
    caller: UserCaller,
    ctl: Ctl,
    task_id: Annotated[str, Query(max_length=256)] = "",
    after_seq: Annotated[int, Query(ge=0, le=2**53 - 1)] = 0,
    limit: Annotated[int, Query(ge=0, le=5000, description="0 = server default")] = 0,
    source: Annotated[
        Literal["", "task", "controller", "notifier", "apiserver"],
        Query(description="only lines from this source"),
    ] = "",
    node_id: Annotated[str, Query(max_length=256, description="only lines about this node")] = "",
    level: Annotated[
        Literal["", "debug", "info", "warning", "error", "critical"],
        Query(description="only service events at this level or above"),
    ] = "",
) -> Logs:
    req = control_pb2.GetLogsRequest(
        job_id=id,
        task_id=task_id,
        after_seq=after_seq,
        limit=limit,
        source=source,
        node_id=node_id,
        min_level=level,
    )
    resp = await ctl.call(ctl.stub.GetLogs, req, caller)
    return Logs(
        lines=[LogLine.from_pb(x) for x in resp.lines],
        last_seq=resp.last_seq,
        dropped=resp.dropped,
    )


@router.get("/jobs/{id}/metrics", response_model=Metrics)
async def get_metrics(
    id: Id,
    caller: UserCaller,
    ctl: Ctl,
    after_seq: Annotated[
        int,
        Query(ge=0, le=2**53 - 1, description="only points stored after this `last_seq`"),
    ] = 0,
) -> Response:
    req = control_pb2.GetMetricsRequest(id=id, after_seq=after_seq)
    return metrics_response(await ctl.call(ctl.stub.GetMetrics, req, caller))
