"""``/v1/nodes`` (owners) and ``/v1/nodes/enroll`` (the enrolment token is the credential)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query, Request, Response

from flame_apiserver.auth import Ctl, UserCaller, client_address, throttle
from flame_apiserver.models import (
    CreateNode,
    Enroll,
    Enrolled,
    Items,
    Node,
    NodeCreated,
    NodeHealth,
    Page,
    UpdateNode,
)
from flame_apiserver.problems import ApiProblem, problem_responses
from flame_apiserver.routers.common import IdempotencyKey, PageQuery, v1_router
from flame_proto.v1 import control_pb2

router = v1_router("nodes")
Id = Annotated[str, Path(min_length=1, max_length=256)]


@router.post("/nodes", status_code=201, response_model=NodeCreated)
async def create_node(
    body: CreateNode, caller: UserCaller, ctl: Ctl, key: IdempotencyKey = None
) -> NodeCreated:
    req = control_pb2.CreateNodeRequest(
        name=body.name, project_id=body.project_id, labels=body.labels
    )
    resp = await ctl.call(ctl.stub.CreateNode, req, caller, idempotency_key=key)
    return NodeCreated(node=Node.from_pb(resp.node), enrolment_token=resp.secret)


@router.post(
    "/nodes/enroll",
    response_model=Enrolled,
    openapi_extra={"security": []},
    responses=problem_responses(400, 401, 404, 409, 413, 422, 429, 503),
)
async def enroll_node(body: Enroll, request: Request, ctl: Ctl) -> Enrolled:
    guard, client = throttle(request), client_address(request)
    guard.check(client, body.enrolment_token)  # a credential too: guessing it is throttled
    req = control_pb2.EnrollNodeRequest(enrolment_token=body.enrolment_token, facts=body.facts)
    try:
        resp = await ctl.call(ctl.stub.EnrollNode, req, None)
    except ApiProblem as exc:
        if exc.status in (401, 404):
            guard.failed(client)
        raise
    notifier: str = request.app.state.settings.notifier_address
    return Enrolled(node=Node.from_pb(resp.node), credential=resp.secret, notifier=notifier)


@router.get("/nodes", response_model=Page[Node])
async def list_nodes(page: PageQuery, caller: UserCaller, ctl: Ctl) -> Page[Node]:
    resp = await ctl.call(ctl.stub.ListNodes, page, caller)
    return Page[Node](
        items=[Node.from_pb(n) for n in resp.items], next_page_token=resp.page.next_page_token
    )


@router.get("/nodes/{id}", response_model=Node)
async def get_node(id: Id, caller: UserCaller, ctl: Ctl) -> Node:
    return Node.from_pb(await ctl.call(ctl.stub.GetNode, control_pb2.GetRequest(id=id), caller))


@router.get("/nodes/{id}/health", response_model=Items[NodeHealth])
async def node_health(
    id: Id,
    caller: UserCaller,
    ctl: Ctl,
    limit: Annotated[int, Query(ge=0, le=100_000)] = 0,
) -> Items[NodeHealth]:
    """The node's newest health samples, oldest first (``limit`` 0: all that are kept)."""
    req = control_pb2.NodeHealthRequest(node_id=id, limit=limit)
    resp = await ctl.call(ctl.stub.GetNodeHealth, req, caller)
    return Items[NodeHealth](items=[NodeHealth.from_pb(s) for s in resp.samples])


@router.patch("/nodes/{id}", response_model=Node)
async def update_node(id: Id, body: UpdateNode, caller: UserCaller, ctl: Ctl) -> Node:
    req = control_pb2.UpdateNodeRequest(
        id=id, labels=body.labels, replace_labels=body.replace_labels
    )
    return Node.from_pb(await ctl.call(ctl.stub.UpdateNode, req, caller))


@router.delete("/nodes/{id}", status_code=204, response_class=Response)
async def delete_node(id: Id, caller: UserCaller, ctl: Ctl) -> None:
    await ctl.call(ctl.stub.DeleteNode, control_pb2.GetRequest(id=id), caller)


@router.post("/nodes/{id}/revoke", response_model=Node)
async def revoke_node(id: Id, caller: UserCaller, ctl: Ctl) -> Node:
    resp = await ctl.call(ctl.stub.RevokeNodeToken, control_pb2.GetRequest(id=id), caller)
    return Node.from_pb(resp)
