"""``/v1/projects`` and their members."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Response

from flame_apiserver.auth import Ctl, UserCaller
from flame_apiserver.models import CreateProject, Page, Project, UpdateProject
from flame_apiserver.routers.common import IdempotencyKey, PageQuery, v1_router
from flame_proto.v1 import control_pb2

router = v1_router("projects")
Id = Annotated[str, Path(min_length=1, max_length=256)]


@router.post("/projects", status_code=201, response_model=Project)
async def create_project(
    body: CreateProject, caller: UserCaller, ctl: Ctl, key: IdempotencyKey = None
) -> Project:
    req = control_pb2.CreateProjectRequest(name=body.name, description=body.description)
    return Project.from_pb(await ctl.call(ctl.stub.CreateProject, req, caller, idempotency_key=key))


@router.get("/projects", response_model=Page[Project])
async def list_projects(page: PageQuery, caller: UserCaller, ctl: Ctl) -> Page[Project]:
    resp = await ctl.call(ctl.stub.ListProjects, page, caller)
    return Page[Project](
        items=[Project.from_pb(p) for p in resp.items], next_page_token=resp.page.next_page_token
    )


@router.get("/projects/{id}", response_model=Project)
async def get_project(id: Id, caller: UserCaller, ctl: Ctl) -> Project:
    resp = await ctl.call(ctl.stub.GetProject, control_pb2.GetRequest(id=id), caller)
    return Project.from_pb(resp)


@router.patch("/projects/{id}", response_model=Project)
async def update_project(id: Id, body: UpdateProject, caller: UserCaller, ctl: Ctl) -> Project:
    req = control_pb2.UpdateProjectRequest(id=id)
    if body.description is not None:
        req.description = body.description
    return Project.from_pb(await ctl.call(ctl.stub.UpdateProject, req, caller))


@router.delete("/projects/{id}", status_code=204, response_class=Response)
async def delete_project(id: Id, caller: UserCaller, ctl: Ctl) -> None:
    await ctl.call(ctl.stub.DeleteProject, control_pb2.GetRequest(id=id), caller)


@router.put("/projects/{id}/members/{user_id}", response_model=Project)
async def add_member(id: Id, user_id: Id, caller: UserCaller, ctl: Ctl) -> Project:
    req = control_pb2.MemberRequest(project_id=id, user_id=user_id)
    return Project.from_pb(await ctl.call(ctl.stub.AddMember, req, caller))


@router.delete("/projects/{id}/members/{user_id}", response_model=Project)
async def remove_member(id: Id, user_id: Id, caller: UserCaller, ctl: Ctl) -> Project:
    req = control_pb2.MemberRequest(project_id=id, user_id=user_id)
    return Project.from_pb(await ctl.call(ctl.stub.RemoveMember, req, caller))
