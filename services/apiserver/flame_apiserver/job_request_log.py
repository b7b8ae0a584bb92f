"""ASGI middleware: a successful request that changes a job (start, stop, update, delete)
becomes a log event bound to the job, which the log shipper puts into the job's logs.

Refused requests are left out on purpose: anybody may send them, and they must not be able to
push a job's own lines out through its retention cap."""

from __future__ import annotations

import re
import time

import structlog
from starlette.types import ASGIApp, Receive, Scope, Send

from flame_apiserver.middleware import StatusRecorder

log = structlog.get_logger(__name__)

JOB_PATH = re.compile(r"^/v1/jobs/(?P<job_id>[^/]+)(?:/[^/]*)?/?$")
CHANGES = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class JobRequestLog:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = JOB_PATH.match(scope.get("path", "")) if scope["type"] == "http" else None
        if match is None or scope["method"] not in CHANGES:
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        record = StatusRecorder(send)
        await self.app(scope, receive, record)
        status = record.status
        if status < 400:
            log.info(
                "job.request",
                job_id=match["job_id"],
                method=scope["method"],
                path=scope["path"],
                status=status,
                ms=round((time.perf_counter() - start) * 1000, 1),
            )
