"""The FastAPI application factory."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.routing import APIRoute

from flame_apiserver.auth_cache import AuthCache, ForgetCallersOnChange
from flame_apiserver.controller import Controller
from flame_apiserver.dashboard import mount_dashboard
from flame_apiserver.job_request_log import JobRequestLog
from flame_apiserver.middleware import BodyLimit, MetricsMiddleware, RequestMetrics
from flame_apiserver.problems import Problem, install_handlers
from flame_apiserver.routers import (
    agent,
    datasets,
    designs,
    events,
    health,
    identity,
    invitations,
    jobs,
    nodes,
    projects,
    registry,
)
from flame_apiserver.settings import ApiserverSettings
from flame_apiserver.throttle import AuthThrottle
from flame_service.logship import LogShipper
from flame_service.logship_rpc import controller_sink

DESCRIPTION = """The Flame control plane's REST API.
Authenticate with `Authorization: Bearer <token>`.
Errors are RFC 9457 `application/problem+json` documents with a stable `code`."""


def create_app(
    settings: ApiserverSettings | None = None, shipper: LogShipper | None = None
) -> FastAPI:
    """``shipper`` (the one logging was configured with) sends the apiserver's events about
    jobs to the controller's log store while the app runs."""
    settings = settings or ApiserverSettings()
    controller = Controller(
        settings.controller_address,
        settings.rpc_timeout_seconds,
        settings.security(),
        settings.service_token(),
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        shipping = None
        if shipper is not None:
            sink = controller_sink(
                lambda: controller.stub, "apiserver", settings.rpc_timeout_seconds
            )
            shipping = asyncio.create_task(shipper.run(sink))
        yield
        if shipping is not None:
            shipping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await shipping
        await controller.close()

    app = FastAPI(title="Flame API", version="1.0.0", description=DESCRIPTION, lifespan=lifespan)
    app.state.settings = settings
    app.state.controller = controller
    app.state.metrics = RequestMetrics()
    app.state.metrics_token = settings.metrics_token()
    app.state.auth_throttle = AuthThrottle(
        settings.auth_failure_limit, settings.auth_failure_window_seconds
    )
    app.state.auth_cache = AuthCache(settings.auth_cache_seconds)
    install_handlers(app)
    route_methods = []
    routers = (
        health,
        identity,
        projects,
        invitations,
        nodes,
        datasets,
        designs,
        jobs,
        events,
        agent,
        registry,
    )
    for module in routers:
        app.include_router(module.router)
        for route in module.router.routes:
            if isinstance(route, APIRoute):
                route_methods.append(
                    (route.path_regex, set(route.methods or ()), "{" in route.path)
                )
    app.state.route_methods = route_methods  # for the Allow header of 405 answers
    mount_dashboard(app)
    app.add_middleware(
        BodyLimit, max_body=settings.max_body_bytes, max_code=settings.max_code_bytes
    )
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    app.add_middleware(JobRequestLog)
    app.add_middleware(ForgetCallersOnChange, cache=app.state.auth_cache)
    _ = Problem  # registered in components through the routes' responses
    return app
