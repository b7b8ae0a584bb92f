"""Creates carrying an Idempotency-Key (issue 17, point 6) over a real gRPC server and store:
a retry returns the first response and makes nothing new, even when the first attempt was cut
off after it wrote its records; keys are per caller and per request."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import grpc
import pytest

from flame_controller.server import RunningController
from flame_proto.v1 import control_pb2
from flame_service.auth import IDEMPOTENCY_KEY, Caller

from .conftest import central_code, design_json, md, status_of
from .test_servicer_flow import ADMIN_TOKEN, login

pb = control_pb2


def keyed(caller: Caller, key: str) -> tuple[tuple[str, str], ...]:
    return (*md(caller), (IDEMPOTENCY_KEY, key))


async def users(stub: Any) -> tuple[Caller, Caller, Caller]:
    admin = await login(stub, ADMIN_TOKEN)
    out = []
    for name in ("alice", "bob"):
        rec = await stub.CreateUser(pb.CreateUserRequest(name=name), metadata=md(admin))
        out.append(Caller("user", rec.id))
    return admin, out[0], out[1]


async def test_every_create_retried_with_its_key_returns_the_first_response(
    stub: Any, controller: RunningController
) -> None:
    admin, alice, _ = await users(stub)
    node_caller = None
    calls: list[tuple[str, Any, Caller]] = [
        ("CreateUser", pb.CreateUserRequest(name="carol"), admin),
        ("CreateToken", pb.CreateTokenRequest(user_id=alice.subject), admin),
        ("CreateProject", pb.CreateProjectRequest(name="p"), alice),
        ("CreateNode", pb.CreateNodeRequest(name="silo"), alice),
        ("CreateDesign", pb.CreateDesignRequest(name="d", schema_json=design_json()), alice),
    ]
    first: dict[str, Any] = {}
    for name, request, caller in calls:
        a = await getattr(stub, name)(request, metadata=keyed(caller, f"k-{name}"))
        b = await getattr(stub, name)(request, metadata=keyed(caller, f"k-{name}"))
        assert a == b, name  # the same body, secrets included
        first[name] = a
    # the replayed secrets are the real ones
    assert (await login(stub, first["CreateToken"].token)) == alice
    enrolled = await stub.EnrollNode(
        pb.EnrollNodeRequest(enrolment_token=first["CreateNode"].secret)
    )
    node_caller = Caller("node", enrolled.node.id)

    design_id = first["CreateDesign"].id
    zip_bytes = central_code()
    push = pb.PushCodeRequest(design_id=design_id, zip=zip_bytes)
    v1 = await stub.PushCode(push, metadata=keyed(alice, "push-1"))
    assert await stub.PushCode(push, metadata=keyed(alice, "push-1")) == v1
    v2 = await stub.PushCode(push, metadata=keyed(alice, "push-2"))  # a new key: a new version
    assert (v1.version, v2.version) == (1, 2)

    ds = pb.CreateDatasetRequest(name="digits", format="npz")
    d1 = await stub.CreateDataset(ds, metadata=keyed(node_caller, "ds"))
    assert await stub.CreateDataset(ds, metadata=keyed(node_caller, "ds")) == d1

    spec = json.dumps({"rounds": 1, "datasets": {"default": [d1.id]}})
    job = pb.CreateJobRequest(name="j", design_id=design_id, code_version=1, spec_json=spec)
    j1 = await stub.CreateJob(job, metadata=keyed(alice, "job"))
    assert await stub.CreateJob(job, metadata=keyed(alice, "job")) == j1

    store = controller.store
    assert len((await store.list_users()).items) == 4  # admin, alice, bob, carol
    assert [t.id for t in (await store.list_tokens(kind="api", subject=alice.subject)).items] == [
        first["CreateToken"].id
    ]
    assert len((await store.list_projects()).items) == 1
    assert len((await store.list_nodes()).items) == 1
    assert len((await store.list_designs()).items) == 1
    assert len(await store.list_code(design_id)) == 2
    assert len((await store.list_datasets()).items) == 1
    assert len((await store.list_jobs()).items) == 1


async def test_a_key_reused_for_another_request_is_refused_and_changes_nothing(
    stub: Any, controller: RunningController
) -> None:
    _, alice, _ = await users(stub)
    await stub.CreateProject(pb.CreateProjectRequest(name="p1"), metadata=keyed(alice, "k"))
    code, detail, err = await status_of(
        stub.CreateProject(pb.CreateProjectRequest(name="p2"), metadata=keyed(alice, "k"))
    )
    assert code == grpc.StatusCode.FAILED_PRECONDITION and err == "idempotency_key_reused"
    assert "different request" in detail
    assert [p.name for p in (await controller.store.list_projects()).items] == ["p1"]
    code, _, err = await status_of(
        stub.CreateProject(pb.CreateProjectRequest(name="p3"), metadata=keyed(alice, "k" * 256))
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT


async def test_keys_are_per_caller_and_per_call(stub: Any, controller: RunningController) -> None:
    _, alice, bob = await users(stub)
    pa = await stub.CreateProject(pb.CreateProjectRequest(name="p"), metadata=keyed(alice, "k"))
    pb_ = await stub.CreateProject(pb.CreateProjectRequest(name="p"), metadata=keyed(bob, "k"))
    assert pa.id != pb_.id and (pa.owner, pb_.owner) == (alice.subject, bob.subject)
    node = await stub.CreateNode(pb.CreateNodeRequest(name="p"), metadata=keyed(alice, "k"))
    assert node.node.id not in (pa.id, pb_.id)  # another call: the same key is another key


@pytest.mark.parametrize("call", ["CreateToken", "CreateNode", "CreateJob", "PushCode"])
async def test_a_create_cut_off_after_it_wrote_is_finished_by_the_retry(
    stub: Any, controller: RunningController, monkeypatch: pytest.MonkeyPatch, call: str
) -> None:
    admin, alice, _ = await users(stub)
    design = await stub.CreateDesign(
        pb.CreateDesignRequest(name="d", schema_json=design_json()), metadata=md(alice)
    )
    push = pb.PushCodeRequest(design_id=design.id, zip=central_code())
    requests: dict[str, tuple[Any, Caller]] = {
        "CreateToken": (pb.CreateTokenRequest(user_id=alice.subject), admin),
        "CreateNode": (pb.CreateNodeRequest(name="silo"), alice),
        "PushCode": (push, alice),
    }
    if call == "CreateJob":
        await stub.PushCode(push, metadata=md(alice))
        node = await stub.CreateNode(pb.CreateNodeRequest(name="n"), metadata=md(alice))
        ds = await stub.CreateDataset(
            pb.CreateDatasetRequest(name="digits", node_id=node.node.id), metadata=md(alice)
        )
        spec = json.dumps({"rounds": 1, "datasets": {"default": [ds.id]}})
        requests[call] = (
            pb.CreateJobRequest(name="j", design_id=design.id, code_version=1, spec_json=spec),
            alice,
        )
    request, caller = requests[call]
    store = controller.store
    real = store.complete_idempotency_key

    async def killed(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the controller died before it recorded the response")

    monkeypatch.setattr(store, "complete_idempotency_key", killed)
    code, _, _ = await status_of(getattr(stub, call)(request, metadata=keyed(caller, "k")))
    assert code == grpc.StatusCode.INTERNAL  # the client saw an error; the records are written
    monkeypatch.setattr(store, "complete_idempotency_key", real)
    got = await getattr(stub, call)(request, metadata=keyed(caller, "k"))
    again = await getattr(stub, call)(request, metadata=keyed(caller, "k"))
    assert again == got

    if call == "CreateToken":
        tokens = (await store.list_tokens(kind="api", subject=alice.subject)).items
        assert [t.id for t in tokens] == [got.id]
        assert tokens[0].token_hash == hashlib.sha256(got.token.encode()).hexdigest()
    elif call == "CreateNode":
        assert [n.id for n in (await store.list_nodes()).items] == [got.node.id]
        enrolled = await stub.EnrollNode(pb.EnrollNodeRequest(enrolment_token=got.secret))
        assert enrolled.node.id == got.node.id
    elif call == "CreateJob":
        assert [j.id for j in (await store.list_jobs()).items] == [got.id]
    else:
        assert [c.version for c in await store.list_code(design.id)] == [got.version] == [1]
