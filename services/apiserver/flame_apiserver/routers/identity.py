"""``/v1/whoami``, users and API tokens."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query, Response

from flame_apiserver.auth import AnyCaller, Ctl, UserCaller
from flame_apiserver.models import (
    AuditEntry,
    CreateToken,
    CreateUser,
    Items,
    ModelAlias,
    Page,
    SetModelAlias,
    TokenInfo,
    TokenSecret,
    TrackingCredentials,
    UpdateUser,
    User,
    WhoAmI,
)
from flame_apiserver.routers.common import IdempotencyKey, PageQuery, v1_router
from flame_proto.v1 import control_pb2

router = v1_router("users")
Id = Annotated[str, Path(min_length=1, max_length=256)]


@router.get("/whoami", response_model=WhoAmI)
async def whoami(caller: AnyCaller) -> WhoAmI:
    return WhoAmI(scope=caller.scope, subject=caller.subject, read_only=caller.read_only)


@router.post("/users", status_code=201, response_model=User)
async def create_user(
    body: CreateUser, caller: UserCaller, ctl: Ctl, key: IdempotencyKey = None
) -> User:
    req = control_pb2.CreateUserRequest(name=body.name, email=body.email, admin=body.admin)
    return User.from_pb(await ctl.call(ctl.stub.CreateUser, req, caller, idempotency_key=key))


@router.get("/users", response_model=Page[User])
async def list_users(page: PageQuery, caller: UserCaller, ctl: Ctl) -> Page[User]:
    resp = await ctl.call(ctl.stub.ListUsers, page, caller)
    return Page[User](
        items=[User.from_pb(u) for u in resp.items], next_page_token=resp.page.next_page_token
    )


@router.get("/users/{id}", response_model=User)
async def get_user(id: Id, caller: UserCaller, ctl: Ctl) -> User:
    return User.from_pb(await ctl.call(ctl.stub.GetUser, control_pb2.GetRequest(id=id), caller))


@router.patch("/users/{id}", response_model=User)
async def update_user(id: Id, body: UpdateUser, caller: UserCaller, ctl: Ctl) -> User:
    req = control_pb2.UpdateUserRequest(id=id)
    if body.email is not None:
        req.email = body.email
    if body.admin is not None:
        req.admin = body.admin
    return User.from_pb(await ctl.call(ctl.stub.UpdateUser, req, caller))


@router.delete("/users/{id}", status_code=204, response_class=Response)
async def delete_user(id: Id, caller: UserCaller, ctl: Ctl) -> None:
    await ctl.call(ctl.stub.DeleteUser, control_pb2.GetRequest(id=id), caller)


@router.post("/users/{id}/tokens", status_code=201, response_model=TokenSecret)
async def create_token(
    id: Id, body: CreateToken, caller: UserCaller, ctl: Ctl, key: IdempotencyKey = None
) -> TokenSecret:
    req = control_pb2.CreateTokenRequest(
        user_id=id, description=body.description, ttl_seconds=body.ttl_seconds, scopes=body.scopes
    )
    return TokenSecret.from_pb(
        await ctl.call(ctl.stub.CreateToken, req, caller, idempotency_key=key)
    )


@router.get("/users/{id}/tokens", response_model=Items[TokenInfo])
async def list_tokens(id: Id, caller: UserCaller, ctl: Ctl) -> Items[TokenInfo]:
    resp = await ctl.call(ctl.stub.ListTokens, control_pb2.ListTokensRequest(user_id=id), caller)
    return Items[TokenInfo](items=[TokenInfo.from_pb(t) for t in resp.items])


@router.get("/audit", response_model=Page[AuditEntry])
async def list_audit(
    page: PageQuery,
    caller: UserCaller,
    ctl: Ctl,
    actor: Annotated[str, Query(max_length=256)] = "",
    action: Annotated[str, Query(max_length=64)] = "",
) -> Page[AuditEntry]:
    """Every state-changing call (admins only), oldest first."""
    req = control_pb2.ListAuditRequest(page=page.page, actor=actor, action=action)
    resp = await ctl.call(ctl.stub.ListAudit, req, caller)
    return Page[AuditEntry](
        items=[AuditEntry.from_pb(a) for a in resp.items],
        next_page_token=resp.page.next_page_token,
    )


@router.get("/tracking/credentials", response_model=TrackingCredentials)
async def tracking_credentials(caller: UserCaller, ctl: Ctl) -> TrackingCredentials:
    """Your login on the platform's MLflow server (made on first use): it reads the runs and
    registered models of your jobs, and nothing else."""
    resp = await ctl.call(ctl.stub.GetTrackingCredentials, control_pb2.Empty(), caller)
    return TrackingCredentials.from_pb(resp)


@router.put("/models/{name}/aliases/{alias}", response_model=ModelAlias)
async def set_model_alias(
    name: Annotated[str, Path(min_length=1, max_length=256)],
    alias: Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z][A-Za-z0-9_-]*$")],
    body: SetModelAlias,
    caller: UserCaller,
    ctl: Ctl,
) -> ModelAlias:
    """Point an alias of one of your jobs' registered models at one of its versions (``@best``
    stays the job's selection). Another tenant's model: not found."""
    req = control_pb2.SetModelAliasRequest(model=name, alias=alias, version=body.version)
    return ModelAlias.from_pb(await ctl.call(ctl.stub.SetModelAlias, req, caller))


@router.delete("/tokens/{id}", status_code=204, response_class=Response)
async def revoke_token(id: Id, caller: UserCaller, ctl: Ctl) -> None:
    await ctl.call(ctl.stub.RevokeToken, control_pb2.GetRequest(id=id), caller)
