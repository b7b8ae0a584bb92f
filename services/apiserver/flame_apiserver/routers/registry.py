"""``/v1/models``: your jobs' registered models (versions, aliases, download), read from the
platform's MLflow server with your own tracking login."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

import httpx
from fastapi import Depends, Path, Request
from fastapi.responses import StreamingResponse

from flame_apiserver import model_registry
from flame_apiserver.auth import Ctl, UserCaller
from flame_apiserver.models import Items, ModelVersion, RegisteredModel
from flame_apiserver.routers.common import v1_router
from flame_proto.v1 import control_pb2
from flame_service.connect import http_client

router = v1_router("models", 400, 401, 403, 404, 409, 413, 422, 429, 502, 503)
Name = Annotated[str, Path(min_length=1, max_length=256, pattern=r"^[^'/\\]+$")]
Version = Annotated[str, Path(pattern=r"^[1-9][0-9]{0,9}$")]


async def tracking(
    request: Request, caller: UserCaller, ctl: Ctl
) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client to MLflow signed in as the caller (the credentials endpoint's RPC)."""
    login = await ctl.call(ctl.stub.GetTrackingCredentials, control_pb2.Empty(), caller)
    settings = request.app.state.settings
    async with http_client(
        login.uri,
        settings.security(),
        basic_auth=(login.username, login.password),
        timeout=settings.rpc_timeout_seconds,
    ) as client:
        yield client


Tracking = Annotated[httpx.AsyncClient, Depends(tracking)]


@router.get("/models", response_model=Items[RegisteredModel])
async def list_models(client: Tracking) -> Items[RegisteredModel]:
    """Your jobs' registered models with their latest version and aliases, by name."""
    found = await model_registry.list_models(client)
    return Items[RegisteredModel](items=[RegisteredModel(**m) for m in found])


@router.get("/models/{name}/versions", response_model=Items[ModelVersion])
async def list_versions(name: Name, client: Tracking) -> Items[ModelVersion]:
    """The versions of one of your models, newest first."""
    found = await model_registry.list_versions(client, name)
    return Items[ModelVersion](items=[ModelVersion(**v) for v in found])


@router.get(
    "/models/{name}/versions/{version}/download",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/zip": {}}, "description": "the model's folder"}},
)
async def download_version(
    name: Name, version: Version, client: Tracking, request: Request
) -> StreamingResponse:
    """The model version's folder (MLflow pyfunc with its weights) as a zip."""
    cap = request.app.state.settings.model_download_max_bytes
    spool, filename = await model_registry.zip_version(client, name, version, cap)
    return StreamingResponse(
        model_registry.chunks(spool),
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
