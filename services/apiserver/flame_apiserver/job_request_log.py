"""ASGI middleware: a successful request that changes a job (start, stop, update, delete)
becomes a log event bound to the job, which the log shipper puts into the job's logs.

Refused requests are left out on purpose: anybody may send them, and they must not be able to
push a job's own lines out through its retention cap."""

from __future__ import annotations

import re
import time

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

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
        status = 500
        start = time.perf_counter()

        async def record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        await self.app(scope, receive, record)
        if status < 400:
            log.info(
                "job.request",
                job_id=match["job_id"],
                method=scope["method"],
                path=scope["path"],
                status=status,
                ms=round((time.perf_counter() - start) * 1000, 1),
            )
