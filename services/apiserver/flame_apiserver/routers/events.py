"""``GET /v1/jobs/{id}/events``: a job's changes as server-sent events.

Authenticated like every route (``Authorization: Bearer``): the dashboard reads the stream with
``fetch`` rather than ``EventSource``, so no token ever travels in a URL or a cookie. The
apiserver holds no state, so the route asks the controller what changed every
``events_poll_seconds`` and pushes only what is new (see :mod:`flame_apiserver.job_events`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

import structlog
from fastapi import Path, Query, Request
from fastapi.responses import StreamingResponse

from flame_apiserver.auth import Ctl, UserCaller
from flame_apiserver.controller import Controller
from flame_apiserver.job_events import Event, JobWatch
from flame_apiserver.problems import ApiProblem
from flame_apiserver.routers.common import v1_router
from flame_apiserver.settings import ApiserverSettings
from flame_proto.v1 import control_pb2
from flame_service.auth import Caller

router = v1_router("jobs")
Id = Annotated[str, Path(min_length=1, max_length=256)]
log = structlog.get_logger("flame.apiserver.events")
_LOG_PAGE = 1000
_STREAM_DOC: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "`text/event-stream`: events `job`, `task`, `metric`, `log` (JSON data) "
        "and a final `end` once the job has ended",
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    }
}


async def _changes(
    ctl: Controller, caller: Caller, job_id: str, watch: JobWatch, task_id: str, logs: bool
) -> list[Event]:
    get = control_pb2.GetRequest(id=job_id)
    job = await ctl.call(ctl.stub.GetJob, get, caller)
    events = watch.task_events(list((await ctl.call(ctl.stub.ListTasks, get, caller)).items))
    # the points stored since the last look, not the job's whole history every poll
    since = control_pb2.GetMetricsRequest(id=job_id, after_seq=watch.metric_seq)
    events += watch.metric_events(await ctl.call(ctl.stub.GetMetrics, since, caller))
    while logs:
        req = control_pb2.GetLogsRequest(
            job_id=job_id, task_id=task_id, after_seq=watch.log_seq, limit=_LOG_PAGE
        )
        lines = list((await ctl.call(ctl.stub.GetLogs, req, caller)).lines)
        events += watch.log_events(lines)
        if len(lines) < _LOG_PAGE:
            break
    # the job's state last: a client that sees "completed" has already had every point
    return events + watch.job_events(job)


@router.get("/jobs/{id}/events", response_class=StreamingResponse, responses=_STREAM_DOC)
async def job_events(
    id: Id,
    request: Request,
    caller: UserCaller,
    ctl: Ctl,
    task_id: Annotated[str, Query(max_length=256, description="only this task's logs")] = "",
    after_seq: Annotated[int, Query(ge=0, le=2**53 - 1, description="logs after this")] = 0,
    logs: Annotated[bool, Query(description="stream log lines too")] = True,
) -> StreamingResponse:
    settings: ApiserverSettings = request.app.state.settings
    watch = JobWatch(log_seq=after_seq)
    first = await _changes(ctl, caller, id, watch, task_id, logs)  # 404 before the stream opens

    async def stream() -> AsyncIterator[bytes]:
        sent = 0
        pending, quiet_since, ended_at = first, time.monotonic(), 0.0
        bound = log.bind(job_id=id, subject=caller.subject)
        bound.info("events.opened")
        try:
            while True:
                for event in pending:
                    sent += 1
                    yield event.encode(sent)
                if pending:
                    quiet_since = time.monotonic()
                if watch.ended and not ended_at:
                    ended_at = time.monotonic()
                if ended_at and time.monotonic() - ended_at >= settings.events_linger_seconds:
                    sent += 1
                    yield Event("end", {"state": watch.job_state}).encode(sent)
                    return
                if time.monotonic() - quiet_since >= settings.events_keepalive_seconds:
                    yield b": keep-alive\n\n"
                    quiet_since = time.monotonic()
                await asyncio.sleep(settings.events_poll_seconds)
                if await request.is_disconnected():
                    return
                try:
                    pending = await _changes(ctl, caller, id, watch, task_id, logs)
                except ApiProblem as exc:  # e.g. the controller went away, or the job was deleted
                    bound.warning("events.failed", code=exc.code, status=exc.status)
                    sent += 1
                    yield Event("error", {"status": exc.status, "code": exc.code}).encode(sent)
                    return
        finally:
            bound.info("events.closed", sent=sent)

    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)
