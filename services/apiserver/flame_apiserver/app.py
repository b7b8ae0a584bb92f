"""The FastAPI application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.routing import APIRoute

from flame_apiserver.controller import Controller
from flame_apiserver.dashboard import mount_dashboard
from flame_apiserver.middleware import BodyLimit, MetricsMiddleware, RequestMetrics
from flame_apiserver.problems import Problem, install_handlers
from flame_apiserver.routers import (
    agent,
    datasets,
    designs,
    events,
    health,
    identity,
    jobs,
    nodes,
    projects,
)
from flame_apiserver.settings import ApiserverSettings
from flame_apiserver.throttle import AuthThrottle

DESCRIPTION = """The Flame control plane's REST API.
Authenticate with `Authorization: Bearer <token>`.
Errors are RFC 9457 `application/problem+json` documents with a stable `code`."""


def create_app(settings: ApiserverSettings | None = None) -> FastAPI:
    settings = settings or ApiserverSettings()
    controller = Controller(
        settings.controller_address,
        settings.rpc_timeout_seconds,
        settings.security(),
        settings.service_token(),
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await controller.close()

    app = FastAPI(title="Flame API", version="1.0.0", description=DESCRIPTION, lifespan=lifespan)
    app.state.settings = settings
    app.state.controller = controller
    app.state.metrics = RequestMetrics()
    app.state.metrics_token = settings.metrics_token()
    app.state.auth_throttle = AuthThrottle(
        settings.auth_failure_limit, settings.auth_failure_window_seconds
    )
    install_handlers(app)
    route_methods = []
    for module in (health, identity, projects, nodes, datasets, designs, jobs, events, agent):
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
    _ = Problem  # registered in components through the routes' responses
    return app
