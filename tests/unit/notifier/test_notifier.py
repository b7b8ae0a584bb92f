"""The notifier over real gRPC on loopback, with a small in-test ControlPlane servicer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from flame_notifier.queues import EventQueues
from flame_notifier.server import Running, serve
from flame_notifier.settings import NotifierSettings
from flame_proto.v1 import (
    common_pb2,
    control_pb2,
    control_pb2_grpc,
    notifier_pb2,
    notifier_pb2_grpc,
)
from flame_service.connect import grpc_channel as insecure_channel
from flame_service.grpc_server import start_server
from tests.support import service_token_file

TOKENS = {"cred-a": "node-a", "cred-b": "node-b"}


class FakeControlPlane(control_pb2_grpc.ControlPlaneServicer):
    def __init__(self) -> None:
        self.presence: list[tuple[str, int, tuple[tuple[str, str], ...]]] = []
        self.fail_presence = 0

    async def Authenticate(self, request: Any, context: Any) -> common_pb2.Principal:
        node = TOKENS.get(request.token)
        if node is None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "unknown token")
        return common_pb2.Principal(scope=common_pb2.SCOPE_NODE, subject=node)

    async def ReportPresence(self, request: Any, context: Any) -> control_pb2.Empty:
        if self.fail_presence:
            self.fail_presence -= 1
            await context.abort(grpc.StatusCode.UNAVAILABLE, "store down")
        md = tuple((k, v) for k, v in context.invocation_metadata() if k.startswith("x-flame"))
        self.presence.append((request.node_id, request.presence, md))
        return control_pb2.Empty()


async def eventually(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the deadline")
        await asyncio.sleep(0.01)


@pytest.fixture
async def stack(
    tmp_path: Path,
) -> AsyncIterator[tuple[Running, FakeControlPlane, Any, grpc.aio.Channel]]:
    token_file = service_token_file(tmp_path)
    cp = FakeControlPlane()
    cp_server, cp_port = await start_server(
        "127.0.0.1:0",
        [(control_pb2_grpc.add_ControlPlaneServicer_to_server, cp, "flame.v1.ControlPlane")],
    )
    running = await serve(
        NotifierSettings(
            listen="127.0.0.1:0",
            controller_address=f"127.0.0.1:{cp_port}",
            presence_retry_max=0.2,
            service_token_file=token_file,
        )
    )
    # the test plays the controller (Notify) and the agents (Subscribe, Ack) on one channel
    channel = insecure_channel(f"127.0.0.1:{running.port}", service_token=token_file.read_text())
    stub = notifier_pb2_grpc.NotifierStub(channel)
    yield running, cp, stub, channel
    await channel.close()
    await running.stop(grace=0)
    await cp_server.stop(0)


def auth(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


async def notify(stub: Any, node: str, task: str, type_: int = 1) -> notifier_pb2.NotifyResponse:
    return await stub.Notify(
        notifier_pb2.NotifyRequest(
            node_id=node, event=notifier_pb2.Event(type=type_, job_id="j1", task_id=task)
        )
    )


async def take(call: Any, n: int) -> list[notifier_pb2.Event]:
    out = []
    async for ev in call:
        out.append(ev)
        if len(out) == n:
            break
    return out


async def test_ordered_delivery_ack_and_replay(stack: Any) -> None:
    running, _cp, stub, _ = stack
    call = stub.Subscribe(notifier_pb2.SubscribeRequest(node_id="node-a"), metadata=auth("cred-a"))
    await eventually(lambda: running.queues.connected("node-a"))
    sent = [await notify(stub, "node-a", f"t{i}") for i in range(5)]
    assert all(r.delivered for r in sent)
    got = await asyncio.wait_for(take(call, 5), 5)
    assert [e.task_id for e in got] == [f"t{i}" for i in range(5)]
    seqs = [e.seq for e in got]
    assert seqs == sorted(seqs) and len(set(seqs)) == 5
    assert [r.seq for r in sent] == seqs
    assert all(e.at.seconds > 0 for e in got)

    await stub.Ack(notifier_pb2.AckRequest(node_id="node-a", seq=seqs[2]), metadata=auth("cred-a"))
    call.cancel()
    # Reconnecting from an old position replays only what was not acknowledged.
    call2 = stub.Subscribe(notifier_pb2.SubscribeRequest(node_id="node-a"), metadata=auth("cred-a"))
    replay = await asyncio.wait_for(take(call2, 2), 5)
    assert [e.task_id for e in replay] == ["t3", "t4"]
    call2.cancel()


async def test_after_seq_resumes_after_handled(stack: Any) -> None:
    running, _, stub, _ = stack
    seqs = [(await notify(stub, "node-a", f"t{i}")).seq for i in range(3)]
    call = stub.Subscribe(
        notifier_pb2.SubscribeRequest(node_id="node-a", after_seq=seqs[1]), metadata=auth("cred-a")
    )
    await eventually(lambda: running.queues.connected("node-a"))
    await notify(stub, "node-a", "t3")
    got = await asyncio.wait_for(take(call, 2), 5)
    assert [e.task_id for e in got] == ["t2", "t3"]
    call.cancel()


async def test_events_for_disconnected_node_wait_for_it(stack: Any) -> None:
    _running, _, stub, _ = stack
    r = await notify(stub, "node-b", "tb", type_=notifier_pb2.EVENT_TYPE_STOP_TASK)
    assert not r.delivered
    agents = (await stub.ListAgents(notifier_pb2.ListAgentsRequest())).agents
    assert [(a.node_id, a.connected, a.last_seq) for a in agents] == [("node-b", False, r.seq)]
    call = stub.Subscribe(notifier_pb2.SubscribeRequest(node_id="node-b"), metadata=auth("cred-b"))
    (ev,) = await asyncio.wait_for(take(call, 1), 5)
    assert (ev.task_id, ev.type, ev.seq) == ("tb", notifier_pb2.EVENT_TYPE_STOP_TASK, r.seq)
    call.cancel()


async def test_wrong_or_missing_credential_refused(stack: Any) -> None:
    _, _, stub, _ = stack
    cases = [(auth("cred-b"), grpc.StatusCode.PERMISSION_DENIED)]
    cases += [
        (auth("nope"), grpc.StatusCode.UNAUTHENTICATED),
        ((), grpc.StatusCode.UNAUTHENTICATED),
    ]
    for md, code in cases:
        call = stub.Subscribe(notifier_pb2.SubscribeRequest(node_id="node-a"), metadata=md)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await asyncio.wait_for(take(call, 1), 5)
        assert err.value.code() == code
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Ack(notifier_pb2.AckRequest(node_id="node-a", seq=1), metadata=auth("cred-b"))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_presence_reported_and_retried(stack: Any) -> None:
    _running, cp, stub, _ = stack
    cp.fail_presence = 2  # the controller refuses the first two reports
    call = stub.Subscribe(notifier_pb2.SubscribeRequest(node_id="node-a"), metadata=auth("cred-a"))
    await eventually(lambda: len(cp.presence) == 1)
    node, presence, md = cp.presence[0]
    assert (node, presence) == ("node-a", control_pb2.PRESENCE_ONLINE)
    assert dict(md)["x-flame-scope"] == "admin"
    call.cancel()
    await eventually(lambda: len(cp.presence) == 2)
    assert cp.presence[1][:2] == ("node-a", control_pb2.PRESENCE_OFFLINE)
    agents = (await stub.ListAgents(notifier_pb2.ListAgentsRequest())).agents
    assert [(a.node_id, a.connected) for a in agents] == [("node-a", False)]


async def test_sequence_survives_restart_by_clock() -> None:
    now = [1_000]
    q1 = EventQueues(clock_ms=lambda: now[0])
    s1 = [q1.push("n", 1)[0] for _ in range(3)]
    q2 = EventQueues(clock_ms=lambda: now[0] + 5)  # a restarted notifier
    s2 = q2.push("n", 1)[0]
    assert s1 == [1_001, 1_002, 1_003] and s2 > s1[-1]


async def test_newer_subscription_replaces_older() -> None:
    reports: list[tuple[str, bool]] = []
    q = EventQueues(on_presence=lambda n, o: reports.append((n, o)))
    first = q.subscribe("n", 0)
    q.push("n", 1, task_id="a")
    assert (await anext(first)).task_id == "a"
    second = q.subscribe("n", 0)
    assert (await anext(second)).task_id == "a"  # unacked: replayed
    with pytest.raises(StopAsyncIteration):
        await anext(first)
    await second.aclose()
    assert reports == [("n", True), ("n", False)]


async def test_queue_cap_drops_oldest_and_ack_bounds() -> None:
    q = EventQueues(max_pending=3)
    seqs = [q.push("n", 1, task_id=f"t{i}")[0] for i in range(5)]
    assert [e.task_id for e in q.pending("n")] == ["t2", "t3", "t4"]
    assert q.ack("n", seqs[3]) == 2
    assert [e.task_id for e in q.pending("n")] == ["t4"]
    q.ack("n", seqs[-1] + 1000)  # acking beyond what was sent does not move acked past last
    (info,) = q.agents()
    assert (info.acked_seq, info.last_seq, info.connected) == (seqs[-1], seqs[-1], False)


async def test_only_the_controller_may_send_events(stack) -> None:  # type: ignore[no-untyped-def]
    running, _, _, _ = stack
    async with insecure_channel(f"127.0.0.1:{running.port}") as stranger:
        stub = notifier_pb2_grpc.NotifierStub(stranger)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Notify(
                notifier_pb2.NotifyRequest(
                    node_id="node-a",
                    event=notifier_pb2.Event(type=notifier_pb2.EVENT_TYPE_STOP_TASK, task_id="t"),
                )
            )
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.ListAgents(notifier_pb2.ListAgentsRequest())
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert running.queues.agents() == [] or all(a.last_seq == 0 for a in running.queues.agents())


async def test_the_health_port_serves_health_and_nothing_else(tmp_path: Path) -> None:
    """FLAME_NOTIFIER_HEALTH_LISTEN: plaintext grpc.health.v1 for kubelet probes, no events."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    running = await serve(
        NotifierSettings(
            listen="127.0.0.1:0",
            health_listen="127.0.0.1:0",
            controller_address="127.0.0.1:1",
            service_token_file=service_token_file(tmp_path),
        )
    )
    try:
        assert running.health_port is not None and running.health_port != running.port
        async with insecure_channel(f"127.0.0.1:{running.health_port}") as channel:
            check = health_pb2_grpc.HealthStub(channel).Check
            for service in ("", "flame.v1.Notifier"):
                reply = await check(health_pb2.HealthCheckRequest(service=service), timeout=10)
                assert reply.status == health_pb2.HealthCheckResponse.SERVING
            call = notifier_pb2_grpc.NotifierStub(channel).Subscribe(
                notifier_pb2.SubscribeRequest(node_id="node-a"), metadata=auth("cred-a")
            )
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await asyncio.wait_for(take(call, 1), 10)
            assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        await running.stop(grace=0)
