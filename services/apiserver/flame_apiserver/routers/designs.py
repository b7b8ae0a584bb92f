"""``/v1/designs`` and their versioned code zips."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Path, Request, Response

from flame_apiserver.auth import Ctl, UserCaller
from flame_apiserver.models import CodeVersion, CreateDesign, Design, Items, Page, UpdateDesign
from flame_apiserver.problems import ApiProblem
from flame_apiserver.routers.common import IdempotencyKey, PageQuery, dump, v1_router
from flame_proto.v1 import control_pb2

router = v1_router("designs")
Id = Annotated[str, Path(min_length=1, max_length=256)]
Version = Annotated[
    str,
    Path(pattern=r"^(latest|[0-9]{1,9})$", description="a version number; 0 or latest = newest"),
]
ZIP_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/zip": {"schema": {"type": "string", "format": "binary"}}},
    }
}
ZIP_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/zip": {"schema": {"type": "string", "format": "binary"}}}}
}


def _version(text: str) -> int:
    return 0 if text == "latest" else int(text)


@router.post("/designs", status_code=201, response_model=Design)
async def create_design(
    body: CreateDesign, caller: UserCaller, ctl: Ctl, key: IdempotencyKey = None
) -> Design:
    req = control_pb2.CreateDesignRequest(
        name=body.name,
        project_id=body.project_id,
        description=body.description,
        schema_json=dump(body.schema_),
    )
    return Design.from_pb(await ctl.call(ctl.stub.CreateDesign, req, caller, idempotency_key=key))


@router.get("/designs", response_model=Page[Design])
async def list_designs(page: PageQuery, caller: UserCaller, ctl: Ctl) -> Page[Design]:
    resp = await ctl.call(ctl.stub.ListDesigns, page, caller)
    return Page[Design](
        items=[Design.from_pb(d) for d in resp.items], next_page_token=resp.page.next_page_token
    )


@router.get("/designs/{id}", response_model=Design)
async def get_design(id: Id, caller: UserCaller, ctl: Ctl) -> Design:
    resp = await ctl.call(ctl.stub.GetDesign, control_pb2.GetRequest(id=id), caller)
    return Design.from_pb(resp)


@router.patch("/designs/{id}", response_model=Design)
async def update_design(id: Id, body: UpdateDesign, caller: UserCaller, ctl: Ctl) -> Design:
    req = control_pb2.UpdateDesignRequest(id=id)
    if body.description is not None:
        req.description = body.description
    if body.schema_ is not None:
        req.schema_json = dump(body.schema_)
    return Design.from_pb(await ctl.call(ctl.stub.UpdateDesign, req, caller))


@router.delete("/designs/{id}", status_code=204, response_class=Response)
async def delete_design(id: Id, caller: UserCaller, ctl: Ctl) -> None:
    await ctl.call(ctl.stub.DeleteDesign, control_pb2.GetRequest(id=id), caller)


@router.post(
    "/designs/{id}/code", status_code=201, response_model=CodeVersion, openapi_extra=ZIP_BODY
)
async def push_code(
    id: Id, request: Request, caller: UserCaller, ctl: Ctl, key: IdempotencyKey = None
) -> CodeVersion:
    data = await request.body()  # size-capped by the body-limit middleware
    if not data:
        raise ApiProblem(400, "invalid_argument", "empty body: send the zip as the request body")
    req = control_pb2.PushCodeRequest(design_id=id, zip=data)
    return CodeVersion.from_pb(await ctl.call(ctl.stub.PushCode, req, caller, idempotency_key=key))


@router.get("/designs/{id}/code", response_model=Items[CodeVersion])
async def list_code(id: Id, caller: UserCaller, ctl: Ctl) -> Items[CodeVersion]:
    resp = await ctl.call(ctl.stub.ListCode, control_pb2.ListCodeRequest(design_id=id), caller)
    return Items[CodeVersion](items=[CodeVersion.from_pb(c) for c in resp.items])


@router.get("/designs/{id}/code/{version}", response_model=CodeVersion)
async def get_code(id: Id, version: Version, caller: UserCaller, ctl: Ctl) -> CodeVersion:
    req = control_pb2.GetCodeRequest(design_id=id, version=_version(version))
    return CodeVersion.from_pb(await ctl.call(ctl.stub.GetCode, req, caller))


@router.get("/designs/{id}/code/{version}/zip", response_class=Response, responses=ZIP_RESPONSE)
async def fetch_code(id: Id, version: Version, caller: UserCaller, ctl: Ctl) -> Response:
    req = control_pb2.GetCodeRequest(design_id=id, version=_version(version))
    bundle = await ctl.call(ctl.stub.FetchCode, req, caller)
    return Response(
        bundle.zip,
        media_type="application/zip",
        headers={
            "Content-Disposition": f'attachment; filename="code-v{bundle.meta.version}.zip"',
            "X-Flame-Sha256": bundle.meta.sha256,
        },
    )


@router.delete("/designs/{id}/code/{version}", status_code=204, response_class=Response)
async def delete_code(id: Id, version: Version, caller: UserCaller, ctl: Ctl) -> None:
    req = control_pb2.GetCodeRequest(design_id=id, version=_version(version))
    await ctl.call(ctl.stub.DeleteCode, req, caller)
