"""Node health over the real ControlPlane servicer: a node reports its own, owners read it."""

from __future__ import annotations

import grpc

from flame_controller.server import RunningController
from flame_proto.v1 import control_pb2 as pb

from .conftest import ADMIN_TOKEN, md, status_of
from .test_servicer_flow import login


def sample(cpu: float, node_id: str = "") -> pb.NodeHealthSample:
    return pb.NodeHealthSample(
        node_id=node_id,
        cpu_percent=cpu,
        cpu_count=8,
        memory_used_bytes=2 * 2**30,
        memory_total_bytes=16 * 2**30,
        disk_used_bytes=10**9,
        disk_total_bytes=10**11,
        net_sent_bytes=1234,
        net_recv_bytes=5678,
        gpus=[pb.GpuHealth(index=0, name="T4", utilization_percent=50, memory_total_bytes=16)],
    )


async def test_nodes_report_their_own_health_and_owners_read_it(  # type: ignore[no-untyped-def]
    stub, controller: RunningController
) -> None:
    assert controller.ctx.node_health_keep == 3
    admin = await login(stub, ADMIN_TOKEN)
    users = {}
    for name in ("alice", "bob"):
        user = await stub.CreateUser(pb.CreateUserRequest(name=name), metadata=md(admin))
        token = await stub.CreateToken(pb.CreateTokenRequest(user_id=user.id), metadata=md(admin))
        users[name] = await login(stub, token.token)
    alice, bob = users["alice"], users["bob"]
    nodes = []
    for owner in (alice, bob):
        created = await stub.CreateNode(pb.CreateNodeRequest(name="silo"), metadata=md(owner))
        enrolled = await stub.EnrollNode(pb.EnrollNodeRequest(enrolment_token=created.secret))
        nodes.append(await login(stub, enrolled.secret))
    alices_node, bobs_node = nodes

    for cpu in (10, 20, 30, 40):
        # node_id in the message is ignored: a node reports only about itself
        await stub.ReportNodeHealth(sample(cpu, bobs_node.subject), metadata=md(alices_node))
    await stub.ReportNodeHealth(sample(99), metadata=md(bobs_node))

    got = await stub.GetNodeHealth(
        pb.NodeHealthRequest(node_id=alices_node.subject), metadata=md(alice)
    )
    assert [s.cpu_percent for s in got.samples] == [20, 30, 40]  # the newest 3, oldest first
    assert {s.node_id for s in got.samples} == {alices_node.subject}
    assert got.samples[-1].gpus[0].name == "T4"
    assert got.samples[0].at.ToDatetime() <= got.samples[-1].at.ToDatetime()
    last = await stub.GetNodeHealth(
        pb.NodeHealthRequest(node_id=alices_node.subject, limit=1), metadata=md(alice)
    )
    assert [s.cpu_percent for s in last.samples] == [40]
    admin_view = await stub.GetNodeHealth(
        pb.NodeHealthRequest(node_id=bobs_node.subject), metadata=md(admin)
    )
    assert [s.cpu_percent for s in admin_view.samples] == [99]

    # another tenant's node is not found; nodes cannot read health; no user can report it
    code, _, _ = await status_of(
        stub.GetNodeHealth(pb.NodeHealthRequest(node_id=bobs_node.subject), metadata=md(alice))
    )
    assert code == grpc.StatusCode.NOT_FOUND
    code, _, _ = await status_of(
        stub.GetNodeHealth(
            pb.NodeHealthRequest(node_id=alices_node.subject), metadata=md(alices_node)
        )
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED
    code, _, _ = await status_of(stub.ReportNodeHealth(sample(1), metadata=md(alice)))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    bad = sample(101)
    code, _, _ = await status_of(stub.ReportNodeHealth(bad, metadata=md(alices_node)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
