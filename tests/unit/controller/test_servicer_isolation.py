"""Two users over the real gRPC API: every cross-user read, update and delete answers NOT_FOUND
and changes nothing; sharing through a project works and stays read-only for members."""

from __future__ import annotations

import json
from typing import Any

import grpc

from flame_proto.v1 import control_pb2 as pb
from flame_service.auth import Caller

from .conftest import ADMIN_TOKEN, central_code, design_json, md, status_of


async def _users(stub) -> tuple[Caller, Caller, Caller]:  # type: ignore[no-untyped-def]
    principal = await stub.Authenticate(pb.AuthenticateRequest(token=ADMIN_TOKEN))
    admin = Caller("admin", principal.subject)
    a = await stub.CreateUser(pb.CreateUserRequest(name="alice"), metadata=md(admin))
    b = await stub.CreateUser(pb.CreateUserRequest(name="bob"), metadata=md(admin))
    return admin, Caller("user", a.id), Caller("user", b.id)


async def _alice_world(stub, alice: Caller) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    project = await stub.CreateProject(pb.CreateProjectRequest(name="p"), metadata=md(alice))
    node = (await stub.CreateNode(pb.CreateNodeRequest(name="n"), metadata=md(alice))).node
    dataset = await stub.CreateDataset(
        pb.CreateDatasetRequest(name="d", node_id=node.id), metadata=md(alice)
    )
    design = await stub.CreateDesign(
        pb.CreateDesignRequest(name="central", schema_json=design_json()), metadata=md(alice)
    )
    await stub.PushCode(
        pb.PushCodeRequest(design_id=design.id, zip=central_code()), metadata=md(alice)
    )
    job = await stub.CreateJob(
        pb.CreateJobRequest(
            name="j", design_id=design.id, spec_json=json.dumps({"datasets": {"default": ["d"]}})
        ),
        metadata=md(alice),
    )
    token = await stub.CreateToken(pb.CreateTokenRequest(user_id=alice.subject), metadata=md(alice))
    return {
        "project": project,
        "node": node,
        "dataset": dataset,
        "design": design,
        "job": job,
        "token": token,
    }


async def _snapshot(stub, who: Caller, w: dict[str, Any]) -> list[Any]:  # type: ignore[no-untyped-def]
    return [
        await stub.GetUser(pb.GetRequest(id=who.subject), metadata=md(who)),
        await stub.GetProject(pb.GetRequest(id=w["project"].id), metadata=md(who)),
        await stub.GetNode(pb.GetRequest(id=w["node"].id), metadata=md(who)),
        await stub.GetDataset(pb.GetRequest(id=w["dataset"].id), metadata=md(who)),
        await stub.GetDesign(pb.GetRequest(id=w["design"].id), metadata=md(who)),
        await stub.ListCode(pb.ListCodeRequest(design_id=w["design"].id), metadata=md(who)),
        await stub.GetJob(pb.GetRequest(id=w["job"].id), metadata=md(who)),
        await stub.ListTasks(pb.GetRequest(id=w["job"].id), metadata=md(who)),
    ]


async def test_cross_user_access_is_not_found_and_changes_nothing(stub) -> None:  # type: ignore[no-untyped-def]
    _, alice, bob = await _users(stub)
    w = await _alice_world(stub, alice)
    before = await _snapshot(stub, alice, w)
    did, jid, pid, nid = w["design"].id, w["job"].id, w["project"].id, w["node"].id
    attempts = [
        stub.GetUser(pb.GetRequest(id=alice.subject), metadata=md(bob)),
        stub.UpdateUser(pb.UpdateUserRequest(id=alice.subject, email="x@y.z"), metadata=md(bob)),
        stub.DeleteUser(pb.GetRequest(id=alice.subject), metadata=md(bob)),
        stub.CreateToken(pb.CreateTokenRequest(user_id=alice.subject), metadata=md(bob)),
        stub.RevokeToken(pb.GetRequest(id=w["token"].id), metadata=md(bob)),
        stub.GetProject(pb.GetRequest(id=pid), metadata=md(bob)),
        stub.UpdateProject(pb.UpdateProjectRequest(id=pid, description="x"), metadata=md(bob)),
        stub.DeleteProject(pb.GetRequest(id=pid), metadata=md(bob)),
        stub.AddMember(pb.MemberRequest(project_id=pid, user_id=bob.subject), metadata=md(bob)),
        stub.RemoveMember(
            pb.MemberRequest(project_id=pid, user_id=alice.subject), metadata=md(bob)
        ),
        stub.GetNode(pb.GetRequest(id=nid), metadata=md(bob)),
        stub.UpdateNode(pb.UpdateNodeRequest(id=nid, labels={"a": "b"}), metadata=md(bob)),
        stub.DeleteNode(pb.GetRequest(id=nid), metadata=md(bob)),
        stub.RevokeNodeToken(pb.GetRequest(id=nid), metadata=md(bob)),
        stub.GetDataset(pb.GetRequest(id=w["dataset"].id), metadata=md(bob)),
        stub.UpdateDataset(
            pb.UpdateDatasetRequest(id=w["dataset"].id, realm="x"), metadata=md(bob)
        ),
        stub.DeleteDataset(pb.GetRequest(id=w["dataset"].id), metadata=md(bob)),
        stub.CreateDataset(pb.CreateDatasetRequest(name="mine", node_id=nid), metadata=md(bob)),
        stub.GetDesign(pb.GetRequest(id=did), metadata=md(bob)),
        stub.UpdateDesign(pb.UpdateDesignRequest(id=did, description="x"), metadata=md(bob)),
        stub.DeleteDesign(pb.GetRequest(id=did), metadata=md(bob)),
        stub.PushCode(pb.PushCodeRequest(design_id=did, zip=central_code()), metadata=md(bob)),
        stub.GetCode(pb.GetCodeRequest(design_id=did), metadata=md(bob)),
        stub.ListCode(pb.ListCodeRequest(design_id=did), metadata=md(bob)),
        stub.FetchCode(pb.GetCodeRequest(design_id=did), metadata=md(bob)),
        stub.DeleteCode(pb.GetCodeRequest(design_id=did, version=1), metadata=md(bob)),
        stub.CreateJob(
            pb.CreateJobRequest(name="x", design_id=did, spec_json="{}"), metadata=md(bob)
        ),
        stub.GetJob(pb.GetRequest(id=jid), metadata=md(bob)),
        stub.UpdateJob(pb.UpdateJobRequest(id=jid, spec_json="{}"), metadata=md(bob)),
        stub.DeleteJob(pb.GetRequest(id=jid), metadata=md(bob)),
        stub.StartJob(pb.GetRequest(id=jid), metadata=md(bob)),
        stub.StopJob(pb.GetRequest(id=jid), metadata=md(bob)),
        stub.ListTasks(pb.GetRequest(id=jid), metadata=md(bob)),
        stub.GetLogs(pb.GetLogsRequest(job_id=jid), metadata=md(bob)),
        stub.GetMetrics(pb.GetRequest(id=jid), metadata=md(bob)),
        stub.ListEndpoints(pb.GetRequest(id=jid), metadata=md(bob)),
        stub.CreateNode(pb.CreateNodeRequest(name="x", project_id=pid), metadata=md(bob)),
    ]
    outcomes = [await status_of(call) for call in attempts]
    wrong = [(i, o) for i, o in enumerate(outcomes) if o[0] != grpc.StatusCode.NOT_FOUND]
    assert wrong == [], f"{len(wrong)} of {len(attempts)} cross-user calls did not answer NOT_FOUND"
    assert await _snapshot(stub, alice, w) == before
    # Alice's token still works: Bob's revoke did nothing.
    principal = await stub.Authenticate(pb.AuthenticateRequest(token=w["token"].token))
    assert principal.subject == alice.subject

    # Bob's lists show nothing of Alice's, and a spec naming her dataset finds no such dataset.
    for rpc in (
        stub.ListProjects,
        stub.ListNodes,
        stub.ListDatasets,
        stub.ListDesigns,
        stub.ListJobs,
    ):
        assert list((await rpc(pb.ListRequest(), metadata=md(bob))).items) == []
    users = await stub.ListUsers(pb.ListRequest(), metadata=md(bob))
    assert [u.id for u in users.items] == [bob.subject]
    bob_design = await stub.CreateDesign(
        pb.CreateDesignRequest(name="central", schema_json=design_json()), metadata=md(bob)
    )
    await stub.PushCode(
        pb.PushCodeRequest(design_id=bob_design.id, zip=central_code()), metadata=md(bob)
    )
    code, detail, _ = await status_of(
        stub.CreateJob(
            pb.CreateJobRequest(
                name="steal",
                design_id=bob_design.id,
                spec_json=json.dumps({"datasets": {"default": [w["dataset"].id]}}),
            ),
            metadata=md(bob),
        )
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "unknown dataset" in detail


async def test_project_members_see_shared_resources_but_cannot_change_them(stub) -> None:  # type: ignore[no-untyped-def]
    _, alice, bob = await _users(stub)
    project = await stub.CreateProject(pb.CreateProjectRequest(name="shared"), metadata=md(alice))
    design = await stub.CreateDesign(
        pb.CreateDesignRequest(name="central", project_id=project.id, schema_json=design_json()),
        metadata=md(alice),
    )
    private = await stub.CreateDesign(
        pb.CreateDesignRequest(name="private", schema_json=design_json()), metadata=md(alice)
    )
    code, _, _ = await status_of(stub.GetDesign(pb.GetRequest(id=design.id), metadata=md(bob)))
    assert code == grpc.StatusCode.NOT_FOUND

    added = await stub.AddMember(
        pb.MemberRequest(project_id=project.id, user_id=bob.subject), metadata=md(alice)
    )
    assert list(added.members) == [bob.subject]
    seen = await stub.GetDesign(pb.GetRequest(id=design.id), metadata=md(bob))
    assert seen.id == design.id
    listed = await stub.ListDesigns(pb.ListRequest(), metadata=md(bob))
    assert [d.id for d in listed.items] == [design.id]
    code, _, _ = await status_of(stub.GetDesign(pb.GetRequest(id=private.id), metadata=md(bob)))
    assert code == grpc.StatusCode.NOT_FOUND
    code, _, err = await status_of(stub.DeleteDesign(pb.GetRequest(id=design.id), metadata=md(bob)))
    assert code == grpc.StatusCode.PERMISSION_DENIED and err == "permission_denied"
    assert (await stub.GetDesign(pb.GetRequest(id=design.id), metadata=md(alice))).id == design.id
    # Bob can share his own work with the project too, and Alice sees it.
    bobs = await stub.CreateDesign(
        pb.CreateDesignRequest(name="bobs", project_id=project.id, schema_json=design_json()),
        metadata=md(bob),
    )
    assert (
        await stub.GetDesign(pb.GetRequest(id=bobs.id), metadata=md(alice))
    ).owner == bob.subject

    await stub.RemoveMember(
        pb.MemberRequest(project_id=project.id, user_id=bob.subject), metadata=md(alice)
    )
    code, _, _ = await status_of(stub.GetDesign(pb.GetRequest(id=design.id), metadata=md(bob)))
    assert code == grpc.StatusCode.NOT_FOUND
