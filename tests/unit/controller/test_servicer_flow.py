"""The ControlPlane API end to end over a real gRPC server (SQLite store): the happy path."""

from __future__ import annotations

import hashlib
import json

import grpc

from flame_controller.server import RunningController
from flame_proto.v1 import common_pb2, control_pb2
from flame_service.auth import Caller

from .conftest import ADMIN_TOKEN, central_code, design_json, md, status_of

pb = control_pb2


async def login(stub, token: str) -> Caller:  # type: ignore[no-untyped-def]
    principal = await stub.Authenticate(pb.AuthenticateRequest(token=token))
    scope = {
        common_pb2.SCOPE_ADMIN: "admin",
        common_pb2.SCOPE_USER: "user",
        common_pb2.SCOPE_NODE: "node",
    }[principal.scope]
    return Caller(scope, principal.subject)  # type: ignore[arg-type]


async def test_full_flow_from_user_to_job(stub, controller: RunningController) -> None:  # type: ignore[no-untyped-def]
    admin = await login(stub, ADMIN_TOKEN)
    assert admin.scope == "admin"

    # users and tokens
    alice_rec = await stub.CreateUser(
        pb.CreateUserRequest(name="alice", email="alice@example.org"), metadata=md(admin)
    )
    secret = await stub.CreateToken(
        pb.CreateTokenRequest(user_id=alice_rec.id, description="laptop"), metadata=md(admin)
    )
    assert secret.token.startswith("flm_user_") and secret.user_id == alice_rec.id
    alice = await login(stub, secret.token)
    assert alice == Caller("user", alice_rec.id)
    me = await stub.GetUser(pb.GetRequest(id=alice.subject), metadata=md(alice))
    assert me.name == "alice" and not me.admin
    # The token is stored hashed only.
    stored = await controller.store.get_token(secret.id)
    assert stored.token_hash == hashlib.sha256(secret.token.encode()).hexdigest()

    # node and enrolment
    created = await stub.CreateNode(
        pb.CreateNodeRequest(name="silo-1", labels={"site": "a"}), metadata=md(alice)
    )
    assert not created.node.enrolled and created.secret
    enrolled = await stub.EnrollNode(
        pb.EnrollNodeRequest(enrolment_token=created.secret, facts={"os": "linux"})
    )
    assert enrolled.node.enrolled and enrolled.secret != created.secret
    node = await login(stub, enrolled.secret)
    assert node == Caller("node", created.node.id)
    code, detail, _ = await status_of(
        stub.EnrollNode(pb.EnrollNodeRequest(enrolment_token=created.secret))
    )
    assert code == grpc.StatusCode.UNAUTHENTICATED, "an enrolment token works once"

    # datasets: one registered by the node on itself, one by its owner
    ds0 = await stub.CreateDataset(
        pb.CreateDatasetRequest(name="digits-0", format="npz", size_bytes=100), metadata=md(node)
    )
    assert ds0.owner == alice.subject and ds0.node_id == node.subject and ds0.uri == ""
    ds1 = await stub.CreateDataset(
        pb.CreateDatasetRequest(name="digits-1", node_id=node.subject, uri="/data/1"),
        metadata=md(alice),
    )
    listed = await stub.ListDatasets(pb.ListRequest(), metadata=md(alice))
    assert {d.id for d in listed.items} == {ds0.id, ds1.id}

    # design and code
    design = await stub.CreateDesign(
        pb.CreateDesignRequest(name="central", schema_json=design_json()), metadata=md(alice)
    )
    roles = [r["name"] for r in json.loads(design.schema_json)["roles"]]
    assert roles == ["trainer", "aggregator"]
    zip_bytes = central_code()
    v1 = await stub.PushCode(
        pb.PushCodeRequest(design_id=design.id, zip=zip_bytes), metadata=md(alice)
    )
    assert v1.version == 1 and v1.sha256 == hashlib.sha256(zip_bytes).hexdigest()
    assert list(v1.roles) == ["trainer", "aggregator"]
    v2 = await stub.PushCode(
        pb.PushCodeRequest(design_id=design.id, zip=zip_bytes), metadata=md(alice)
    )
    assert v2.version == 2
    versions = await stub.ListCode(pb.ListCodeRequest(design_id=design.id), metadata=md(alice))
    assert [c.version for c in versions.items] == [1, 2]
    bundle = await stub.FetchCode(pb.GetCodeRequest(design_id=design.id), metadata=md(alice))
    assert bundle.meta.version == 2 and bundle.zip == zip_bytes

    # job
    spec = {"rounds": 2, "datasets": {"default": ["digits-0", ds1.id]}}
    job = await stub.CreateJob(
        pb.CreateJobRequest(
            name="digits", design_id=design.id, code_version=1, spec_json=json.dumps(spec)
        ),
        metadata=md(alice),
    )
    assert job.state == "ready" and job.desired_state == "ready" and job.code_version == 1
    stored_spec = json.loads(job.spec_json)
    assert stored_spec["rounds"] == 2 and stored_spec["tracking"]["register"] is True
    tasks = (await stub.ListTasks(pb.GetRequest(id=job.id), metadata=md(alice))).items
    assert sorted((t.role, t.index, t.node_id, t.state) for t in tasks) == [
        ("aggregator", 0, "", "pending"),
        ("trainer", 0, node.subject, "pending"),
        ("trainer", 1, node.subject, "pending"),
    ]
    jobs = await stub.ListJobs(pb.ListRequest(), metadata=md(alice))
    assert [j.id for j in jobs.items] == [job.id]
    got = await stub.GetJob(pb.GetRequest(id=job.id), metadata=md(alice))
    assert got == job

    # the node sees exactly its two trainer tasks and can fetch them, not the aggregator's
    assigned = await stub.ListAssignedTasks(pb.Empty(), metadata=md(node))
    assert sorted(t.role for t in assigned.items) == ["trainer", "trainer"]
    trainer = assigned.items[0]
    task_bundle = await stub.FetchTask(pb.GetRequest(id=trainer.id), metadata=md(node))
    config = json.loads(task_bundle.config_json)
    assert config["task_id"] == trainer.id and config["job_id"] == job.id
    assert config["discovery"]["url"] == "http://127.0.0.1:10100"
    assert task_bundle.code.version == 1 and task_bundle.code_zip == zip_bytes
    aggregator = next(t for t in tasks if t.role == "aggregator")
    code, _, _ = await status_of(stub.FetchTask(pb.GetRequest(id=aggregator.id), metadata=md(node)))
    assert code == grpc.StatusCode.NOT_FOUND

    # start, stop, delete
    started = await stub.StartJob(pb.GetRequest(id=job.id), metadata=md(alice))
    assert started.desired_state == "running"
    code, detail, err = await status_of(
        stub.DeleteJob(pb.GetRequest(id=job.id), metadata=md(alice))
    )
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "stop it" in detail
    assert err == "failed_precondition"
    stopped = await stub.StopJob(pb.GetRequest(id=job.id), metadata=md(alice))
    assert stopped.desired_state == "stopped"
    await stub.DeleteJob(pb.GetRequest(id=job.id), metadata=md(alice))
    code, _, _ = await status_of(stub.GetJob(pb.GetRequest(id=job.id), metadata=md(alice)))
    assert code == grpc.StatusCode.NOT_FOUND
    assert await controller.store.list_tasks(job_id=job.id) == []

    # revoking the node credential locks the node out
    await stub.RevokeNodeToken(pb.GetRequest(id=node.subject), metadata=md(alice))
    code, detail, _ = await status_of(
        stub.Authenticate(pb.AuthenticateRequest(token=enrolled.secret))
    )
    assert code == grpc.StatusCode.UNAUTHENTICATED and "revoked" in detail
    # ... and revoking the user token locks alice out
    await stub.RevokeToken(pb.GetRequest(id=secret.id), metadata=md(alice))
    code, _, _ = await status_of(stub.Authenticate(pb.AuthenticateRequest(token=secret.token)))
    assert code == grpc.StatusCode.UNAUTHENTICATED


async def test_calls_without_caller_identity_are_unauthenticated(stub) -> None:  # type: ignore[no-untyped-def]
    code, _, err = await status_of(stub.ListJobs(pb.ListRequest()))
    assert code == grpc.StatusCode.UNAUTHENTICATED and err == "unauthenticated"
    code, _, _ = await status_of(stub.Authenticate(pb.AuthenticateRequest(token="flm_user_nope")))
    assert code == grpc.StatusCode.UNAUTHENTICATED


async def test_node_credentials_cannot_use_user_operations(stub) -> None:  # type: ignore[no-untyped-def]
    admin = await login(stub, ADMIN_TOKEN)
    created = await stub.CreateNode(pb.CreateNodeRequest(name="n"), metadata=md(admin))
    enrolled = await stub.EnrollNode(pb.EnrollNodeRequest(enrolment_token=created.secret))
    node = await login(stub, enrolled.secret)
    code, _, _ = await status_of(stub.ListJobs(pb.ListRequest(), metadata=md(node)))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    code, _, _ = await status_of(
        stub.CreateUser(pb.CreateUserRequest(name="mallory"), metadata=md(node))
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED


async def test_a_bug_answers_internal_without_leaking_details(stub, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from flame_controller.domain import users

    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("secret stack detail")

    monkeypatch.setattr(users, "get_user", broken)
    admin = await login(stub, ADMIN_TOKEN)
    code, detail, err = await status_of(
        stub.GetUser(pb.GetRequest(id=admin.subject), metadata=md(admin))
    )
    assert code == grpc.StatusCode.INTERNAL and err == "internal"
    assert "secret" not in detail


def test_every_rpc_of_control_proto_is_implemented() -> None:
    from flame_controller.servicer import ControlPlaneServicer
    from flame_proto.v1 import control_pb2_grpc

    service = control_pb2.DESCRIPTOR.services_by_name["ControlPlane"]
    rpcs = {m.name for m in service.methods}
    assert len(rpcs) == 59
    base = control_pb2_grpc.ControlPlaneServicer
    missing = [n for n in rpcs if getattr(ControlPlaneServicer, n) is getattr(base, n)]
    assert missing == []
