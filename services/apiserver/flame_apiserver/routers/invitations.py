"""``/v1/projects/{id}/invitations`` and ``/v1/invitations``: one-time links to join a project."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials

from flame_apiserver.auth import Ctl, UserCaller, authenticate, bearer_scheme
from flame_apiserver.models import (
    AcceptInvitation,
    CreateInvitation,
    Invitation,
    InvitationAccepted,
    InvitationSecret,
    Page,
    Project,
    TokenSecret,
    User,
)
from flame_apiserver.problems import ApiProblem
from flame_apiserver.routers.common import IdempotencyKey, PageQuery, v1_router
from flame_proto.v1 import control_pb2
from flame_service.auth import Caller

router = v1_router("projects")
Id = Annotated[str, Path(min_length=1, max_length=256)]
JOIN_PATH = "/dashboard/#/join/"  # a fragment: the secret never reaches a server's access log


async def optional_caller(
    request: Request,
    ctl: Ctl,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> Caller | None:
    if credentials is None or not credentials.credentials:
        return None
    caller = await authenticate(request, ctl, credentials)
    if caller.scope == "node":
        raise ApiProblem(403, "permission_denied", "node credentials cannot join a project")
    return caller


@router.post("/projects/{id}/invitations", status_code=201, response_model=InvitationSecret)
async def create_invitation(
    id: Id, body: CreateInvitation, caller: UserCaller, ctl: Ctl, key: IdempotencyKey = None
) -> InvitationSecret:
    req = control_pb2.CreateInvitationRequest(
        project_id=id, ttl_seconds=body.ttl_seconds, note=body.note
    )
    resp = await ctl.call(ctl.stub.CreateInvitation, req, caller, idempotency_key=key)
    return InvitationSecret(
        invitation=Invitation.from_pb(resp.invitation),
        secret=resp.secret,
        link=JOIN_PATH + resp.secret,
    )


@router.get("/projects/{id}/invitations", response_model=Page[Invitation])
async def list_invitations(
    id: Id, page: PageQuery, caller: UserCaller, ctl: Ctl
) -> Page[Invitation]:
    req = control_pb2.ListInvitationsRequest(project_id=id, page=page.page)
    resp = await ctl.call(ctl.stub.ListInvitations, req, caller)
    return Page[Invitation](
        items=[Invitation.from_pb(i) for i in resp.items],
        next_page_token=resp.page.next_page_token,
    )


@router.delete("/invitations/{id}", response_model=Invitation)
async def revoke_invitation(id: Id, caller: UserCaller, ctl: Ctl) -> Invitation:
    resp = await ctl.call(ctl.stub.RevokeInvitation, control_pb2.GetRequest(id=id), caller)
    return Invitation.from_pb(resp)


@router.post(
    "/invitations/accept",
    response_model=InvitationAccepted,
    openapi_extra={"security": [{}, {"HTTPBearer": []}]},  # the bearer token is optional
)
async def accept_invitation(
    body: AcceptInvitation,
    ctl: Ctl,
    caller: Annotated[Caller | None, Depends(optional_caller)],
) -> InvitationAccepted:
    """Join the project the link is for: signed in, as yourself; otherwise a new account named
    ``name`` is made (never an admin) and its API token is returned once."""
    req = control_pb2.AcceptInvitationRequest(secret=body.secret, name=body.name, email=body.email)
    resp = await ctl.call(ctl.stub.AcceptInvitation, req, caller)
    return InvitationAccepted(
        project=Project.from_pb(resp.project),
        user=User.from_pb(resp.user),
        token=TokenSecret.from_pb(resp.token) if resp.HasField("token") else None,
    )
