"""Liveness, readiness (controller reachable) and Prometheus metrics; no auth."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from flame_apiserver.auth import Ctl
from flame_apiserver.models import Health
from flame_apiserver.problems import ApiProblem, problem_responses

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    return Health(status="ok")


@router.get("/readyz", response_model=Health, responses=problem_responses(503))
async def readyz(ctl: Ctl) -> Health:
    if not await ctl.healthy():
        raise ApiProblem(503, "unavailable", f"controller {ctl.address} is not serving")
    return Health(status="ok")


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
async def metrics(request: Request) -> Response:
    body = generate_latest(request.app.state.metrics.registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
