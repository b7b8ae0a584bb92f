"""The controller believes a caller's identity only from the apiserver and the notifier: a
process on the host that forges ``x-flame-scope: admin`` metadata on the controller's port gets
UNAUTHENTICATED for every call and changes nothing."""

from __future__ import annotations

import grpc
import pytest

from flame_proto.v1 import control_pb2 as pb
from flame_proto.v1 import control_pb2_grpc
from flame_service.auth import Caller
from flame_service.connect import grpc_channel

from .conftest import ADMIN_TOKEN, Edge

FORGED = Caller("admin", "someone").metadata()


@pytest.mark.parametrize("token", [None, "not-the-service-credential"])
async def test_forged_metadata_is_unauthenticated_on_every_call(
    edge: Edge, token: str | None
) -> None:
    async with grpc_channel(edge.controller.address, service_token=token) as channel:
        stub = control_pb2_grpc.ControlPlaneStub(channel)  # type: ignore[misc]
        calls = [
            stub.ListUsers(pb.ListRequest(), metadata=FORGED),
            stub.CreateUser(pb.CreateUserRequest(name="mallory", admin=True), metadata=FORGED),
            stub.Authenticate(pb.AuthenticateRequest(token=ADMIN_TOKEN)),
            stub.EnrollNode(pb.EnrollNodeRequest(enrolment_token="flm_enrol_x")),
        ]
        for call in calls:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    async with edge.client(ADMIN_TOKEN) as api:
        names = [u["name"] for u in (await api.get("/v1/users")).json()["items"]]
    assert names == ["admin"]  # nothing was created


async def test_the_apiserver_path_still_works(edge: Edge) -> None:
    async with edge.client(ADMIN_TOKEN) as api:
        assert (await api.get("/v1/whoami")).json()["scope"] == "admin"
