"""ASGI middleware: request-size limits (413 problem+json) and Prometheus request metrics."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from flame_apiserver.problems import ApiProblem

CODE_UPLOAD = re.compile(r"^/v1/designs/[^/]+/code/?$")


class BodyTooLarge(ApiProblem):
    def __init__(self, limit: int) -> None:
        super().__init__(413, "too_large", f"request body exceeds {limit} bytes")


class BodyLimit:
    """Rejects bodies above ``max_body`` (``max_code`` for code uploads) before or while reading."""

    def __init__(self, app: ASGIApp, max_body: int, max_code: int) -> None:
        self.app = app
        self.max_body = max_body
        self.max_code = max_code

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        code = scope["method"] == "POST" and CODE_UPLOAD.match(scope["path"])
        limit = self.max_code if code else self.max_body
        for key, value in scope.get("headers", ()):
            if key == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > limit:
                    await BodyTooLarge(limit).response()(scope, receive, send)
                    return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit)  # rendered by the ApiProblem handler
            return message

        await self.app(scope, limited, send)


@dataclass
class RequestMetrics:
    """Per-app registry so several apps (tests) never clash on metric names."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.requests = Counter(
            "flame_apiserver_requests_total",
            "HTTP requests by route template and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "flame_apiserver_request_seconds",
            "HTTP request latency by route template",
            ["method", "route"],
            registry=self.registry,
        )


class StatusRecorder:
    """A ``send`` that passes every message on and keeps the response's status (500 until the
    response starts: what a client sees when the app raised)."""

    def __init__(self, send: Send) -> None:
        self.status = 500
        self._send = send

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        await self._send(message)


class MetricsMiddleware:
    def __init__(self, app: ASGIApp, metrics: RequestMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        record = StatusRecorder(send)
        try:
            await self.app(scope, receive, record)
        finally:
            status = record.status
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope["method"]
            self.metrics.requests.labels(method, template, str(status)).inc()
            self.metrics.latency.labels(method, template).observe(time.perf_counter() - start)
