"""Liveness and readiness (no auth), and Prometheus metrics (admin or the metrics token)."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from flame_apiserver.auth import Ctl, authenticate
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


_bearer = HTTPBearer(auto_error=False, description="admin token or the metrics token")


async def metrics_reader(
    request: Request,
    ctl: Ctl,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """The scraper's dedicated token (FLAME_APISERVER_METRICS_TOKEN_FILE) or an admin's."""
    token: str | None = request.app.state.metrics_token
    if token and credentials and hmac.compare_digest(credentials.credentials, token):
        return
    caller = await authenticate(request, ctl, credentials)
    if caller.scope != "admin":
        raise ApiProblem(403, "permission_denied", "metrics are for admins and the metrics token")


@router.get(
    "/metrics",
    response_class=Response,
    dependencies=[Depends(metrics_reader)],
    responses={
        200: {"content": {"text/plain": {"schema": {"type": "string"}}}},
        **problem_responses(401, 403),
    },
)
async def metrics(request: Request) -> Response:
    body = generate_latest(request.app.state.metrics.registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
