"""Bearer-token authentication: the controller says who a token belongs to; the answer is kept
for ``auth_cache_seconds`` (see :mod:`flame_apiserver.auth_cache` for the bound)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from flame_apiserver.auth_cache import AuthCache
from flame_apiserver.controller import Controller
from flame_apiserver.problems import ApiProblem
from flame_apiserver.throttle import AuthThrottle
from flame_proto.v1 import common_pb2, control_pb2
from flame_service.auth import Caller, Scope

bearer_scheme = HTTPBearer(auto_error=False, description="API token, node credential or task token")
_SCOPES: dict[int, Scope] = {
    common_pb2.SCOPE_ADMIN: "admin",
    common_pb2.SCOPE_USER: "user",
    common_pb2.SCOPE_NODE: "node",
}
_CHALLENGE = {"WWW-Authenticate": "Bearer"}


async def controller(request: Request) -> Controller:  # async: a def would hop to a thread
    ctl: Controller = request.app.state.controller
    return ctl


Ctl = Annotated[Controller, Depends(controller)]


def throttle(request: Request) -> AuthThrottle:
    found: AuthThrottle = request.app.state.auth_throttle
    return found


def auth_cache(request: Request) -> AuthCache:
    found: AuthCache = request.app.state.auth_cache
    return found


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def authenticate(
    request: Request,
    ctl: Ctl,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> Caller:
    if credentials is None or not credentials.credentials:
        raise ApiProblem(401, "unauthenticated", "missing bearer token", _CHALLENGE)
    guard, client = throttle(request), client_address(request)
    guard.check(client, credentials.credentials)
    cache = auth_cache(request)
    cached = cache.get(credentials.credentials)
    if cached is not None:
        guard.succeeded(credentials.credentials)
        return cached
    generation = cache.generation
    try:
        principal = await ctl.call(
            ctl.stub.Authenticate,
            control_pb2.AuthenticateRequest(token=credentials.credentials),
            None,
        )
    except ApiProblem as exc:
        if exc.status == 401:
            exc.headers = _CHALLENGE
            guard.failed(client)
        raise
    scope = _SCOPES.get(principal.scope)
    if scope is None or not principal.subject:
        guard.failed(client)
        raise ApiProblem(401, "unauthenticated", "unknown token", _CHALLENGE)
    guard.succeeded(credentials.credentials)
    caller = Caller(scope=scope, subject=principal.subject, read_only=principal.read_only)
    cache.put(credentials.credentials, caller, generation)
    return caller


AnyCaller = Annotated[Caller, Depends(authenticate)]


async def user_caller(caller: AnyCaller) -> Caller:
    if caller.scope == "node":
        raise ApiProblem(403, "permission_denied", "node credentials cannot use this route")
    return caller


async def node_caller(caller: AnyCaller) -> Caller:
    if caller.scope != "node":
        raise ApiProblem(403, "permission_denied", "this route is for node credentials")
    return caller


UserCaller = Annotated[Caller, Depends(user_caller)]
NodeCaller = Annotated[Caller, Depends(node_caller)]
