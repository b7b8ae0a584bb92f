"""The agent subscribed to a real notifier over gRPC (with an in-test ControlPlane)."""

from __future__ import annotations

import json
from typing import Any

import grpc
import psutil

from flame_notifier.server import serve
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
from flamelet.events import GrpcEventSource
from tests.support import service_token_file

from .conftest import CRED, NODE, Node, Running, eventually
from .test_agent import LONG


class ControlPlane(control_pb2_grpc.ControlPlaneServicer):
    async def Authenticate(self, request: Any, context: Any) -> common_pb2.Principal:
        if request.token != CRED:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "unknown token")
        return common_pb2.Principal(scope=common_pb2.SCOPE_NODE, subject=NODE)

    async def ReportPresence(self, request: Any, context: Any) -> control_pb2.Empty:
        return control_pb2.Empty()


async def test_stop_through_the_notifier_after_its_restart(node: Node) -> None:
    cp_server, cp_port = await start_server(
        "127.0.0.1:0",
        [(control_pb2_grpc.add_ControlPlaneServicer_to_server, ControlPlane(), "x")],
    )
    token_file = service_token_file(node.data / "secrets")
    settings = NotifierSettings(
        listen="127.0.0.1:0",
        controller_address=f"127.0.0.1:{cp_port}",
        service_token_file=token_file,
    )
    notifier = await serve(settings)
    port = notifier.port
    events = GrpcEventSource(f"127.0.0.1:{port}", NODE, CRED)
    node.fake.add_task("t1", {"trainer/main.py": LONG})
    agent, api = node.agent(events)
    channel = insecure_channel(f"127.0.0.1:{port}", service_token=token_file.read_text())
    stub = notifier_pb2_grpc.NotifierStub(channel)
    try:
        async with Running(agent, api):
            await eventually(lambda: (node.data / "pids.json").exists(), what="task started")
            pids = json.loads((node.data / "pids.json").read_text())
            await eventually(lambda: notifier.queues.connected(NODE))
            # The notifier restarts (same address): the agent reconnects by itself.
            await notifier.stop(grace=0)
            notifier = await serve(settings.model_copy(update={"listen": f"127.0.0.1:{port}"}))
            await eventually(lambda: notifier.queues.connected(NODE), what="reconnected")
            sent = await stub.Notify(
                notifier_pb2.NotifyRequest(
                    node_id=NODE,
                    event=notifier_pb2.Event(
                        type=notifier_pb2.EVENT_TYPE_STOP_TASK, job_id="job-1", task_id="t1"
                    ),
                )
            )
            assert sent.delivered
            await eventually(lambda: "failed" in node.fake.states("t1"), what="stopped")
            await eventually(
                lambda: notifier.queues.agents()[0].acked_seq == sent.seq, what="acked"
            )
        assert not any(
            psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
            for p in pids
        )
        assert "STOP_TASK" in node.fake.statuses[-1][2]
    finally:
        await channel.close()
        await events.close()
        await notifier.stop(grace=0)
        await cp_server.stop(0)
