"""grpc-backend behaviour beyond the shared contract: late peers, retries, refusals."""

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import numpy as np
import pytest
from structlog.testing import capture_logs

from flame.channels import ChannelSet, open_channels
from flame.channels.chunking import chunks_of
from flame.channels.discovery import MemoryDiscovery
from flame.channels.settings import ChannelSettings
from flame.config import (
    ChannelMembership,
    DesignSchema,
    DiscoverySettings,
    JobSpec,
    PeerRef,
    TaskConfig,
)
from flame.errors import ChannelError, PeerTimeout
from flame.messages import Message
from flame_proto.v1 import data_pb2, data_pb2_grpc

DESIGN = DesignSchema.model_validate(
    {
        "roles": [{"name": "trainer", "isDataConsumer": True}, {"name": "aggregator"}],
        "channels": [{"name": "param", "pair": ["trainer", "aggregator"]}],
    }
)
SETTINGS = ChannelSettings(send_timeout=10, retry_initial=0.02, retry_max=0.1)


async def _until_retried(logs: list[dict[str, object]], times: int = 2) -> None:
    deadline = asyncio.get_running_loop().time() + 5
    while sum(e["event"] == "grpc.retry" for e in logs) < times:
        assert asyncio.get_running_loop().time() < deadline, "the sender did not retry"
        await asyncio.sleep(0.01)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _config(
    job_id: str, task_id: str, peers: dict[str, str], endpoints: dict[str, str] | None = None
) -> TaskConfig:
    return TaskConfig(
        job_id=job_id,
        job_name="g",
        task_id=task_id,
        role="aggregator" if task_id == "agg" else "trainer",
        design=DESIGN,
        job=JobSpec(),
        channels={
            "param": ChannelMembership(
                name="param",
                group="default",
                backend="grpc",
                peers=[PeerRef(task_id=t, role=r) for t, r in peers.items()],
            )
        },
        discovery=DiscoverySettings(endpoints=endpoints or {}),
    )


async def test_a_send_waits_for_a_peer_that_starts_late_and_survives_its_restart() -> None:
    job = uuid.uuid4().hex
    endpoints = {"agg": f"127.0.0.1:{_free_port()}"}
    t1 = await open_channels(
        _config(job, "t1", {"agg": "aggregator"}, endpoints), settings=SETTINGS
    )
    agg_cfg = _config(job, "agg", {"t1": "trainer"}, endpoints)
    try:
        with capture_logs() as logs:
            sending = asyncio.create_task(t1["param"].send("agg", Message("update", round=1)))
            await _until_retried(logs)  # the aggregator is not up: the sender keeps retrying
        assert not sending.done()
        agg = await open_channels(agg_cfg, settings=SETTINGS)
        await sending
        assert (await agg["param"].recv("t1", timeout=5)).round == 1

        await agg.close()  # the aggregator restarts on its port
        with capture_logs() as logs:
            sending = asyncio.create_task(t1["param"].send("agg", Message("update", round=2)))
            await _until_retried(logs)
        agg = await open_channels(agg_cfg, settings=SETTINGS)
        await sending
        assert (await agg["param"].recv("t1", timeout=5)).round == 2
        await agg.close()
    finally:
        await t1.close()


async def test_a_peer_that_never_comes_times_out() -> None:
    job = uuid.uuid4().hex
    t1 = await open_channels(
        _config(job, "t1", {"agg": "aggregator"}, {"agg": f"127.0.0.1:{_free_port()}"}),
        settings=ChannelSettings(send_timeout=0.5, retry_initial=0.02),
    )
    try:
        with pytest.raises(PeerTimeout):
            await t1["param"].send("agg", Message("update"))
    finally:
        await t1.close()


async def test_the_send_timeout_defaults_to_the_round_timeout() -> None:
    cfg = _config("j", "t1", {"agg": "aggregator"}, {"agg": f"127.0.0.1:{_free_port()}"})
    cfg = cfg.model_copy(update={"job": JobSpec(round_timeout=0.3)})
    t1 = await open_channels(cfg)
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(PeerTimeout):
            await t1["param"].send("agg", Message("update"))
        assert loop.time() - started < 5  # gave up with the round, not after 60 s
    finally:
        await t1.close()


@dataclass
class Served:
    job: str
    endpoint: str
    agg: ChannelSet


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    job = uuid.uuid4().hex
    discovery = MemoryDiscovery()
    agg = await open_channels(
        _config(job, "agg", {"t1": "trainer"}), discovery=discovery, settings=SETTINGS
    )
    yield Served(job, await discovery.resolve("agg", 1), agg)
    await agg.close()


async def _raw_send(endpoint: str, chunks: list[data_pb2.Chunk]) -> data_pb2.Receipt:
    async with grpc.aio.insecure_channel(endpoint) as conn:
        stub = data_pb2_grpc.DataChannelStub(conn)

        async def stream() -> AsyncIterator[data_pb2.Chunk]:
            for c in chunks:
                yield c

        return await stub.Send(stream(), timeout=5)


async def test_the_server_refuses_what_is_not_for_it(served: Served) -> None:
    job, endpoint, agg = served.job, served.endpoint, served.agg

    def msg(sender: str = "t1", job_id: str = job, channel: str = "param") -> Message:
        w = {"w": np.ones(1000, np.float32)}
        return Message("update", weights=w, sender=sender, job_id=job_id, channel=channel)

    cases = [
        (list(chunks_of(msg(job_id="other-job"), "agg", 1024)), grpc.StatusCode.PERMISSION_DENIED),
        (list(chunks_of(msg(sender="intruder"), "agg", 1024)), grpc.StatusCode.PERMISSION_DENIED),
        (list(chunks_of(msg(channel="nope"), "agg", 1024)), grpc.StatusCode.NOT_FOUND),
        (list(chunks_of(msg(), "someone-else", 1024)), grpc.StatusCode.NOT_FOUND),
        (list(chunks_of(msg(), "agg", 1024))[:2], grpc.StatusCode.INVALID_ARGUMENT),  # truncated
        ([], grpc.StatusCode.INVALID_ARGUMENT),
    ]
    for chunks, code in cases:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await _raw_send(endpoint, chunks)
        assert info.value.code() == code
    with pytest.raises(PeerTimeout):
        await agg["param"].recv("t1", timeout=0.2)  # none of it was delivered

    good = msg()
    receipt = await _raw_send(endpoint, list(chunks_of(good, "agg", 1024)))
    assert receipt.message_id == good.message_id and receipt.bytes_received > 4000
    again = await _raw_send(endpoint, list(chunks_of(good, "agg", 1024)))
    assert again.bytes_received == 0  # a retry of a delivered message is acknowledged, dropped
    assert (await agg["param"].recv("t1", timeout=1)).message_id == good.message_id
    with pytest.raises(PeerTimeout):
        await agg["param"].recv("t1", timeout=0.2)


async def test_a_refused_send_raises_channel_error_at_once() -> None:
    discovery = MemoryDiscovery()
    agg = await open_channels(
        _config("job-a", "agg", {"t1": "trainer"}), discovery=discovery, settings=SETTINGS
    )
    t1 = await open_channels(  # misconfigured: thinks it is in another job
        _config("job-b", "t1", {"agg": "aggregator"}), discovery=discovery, settings=SETTINGS
    )
    try:
        with pytest.raises(ChannelError) as info:
            await t1["param"].send("agg", Message("update"))
        assert not isinstance(info.value, PeerTimeout)
        assert "PERMISSION_DENIED" in str(info.value)
    finally:
        await t1.close()
        await agg.close()


async def test_all_grpc_channels_of_a_task_share_one_server() -> None:
    design = DesignSchema.model_validate(
        {
            "roles": [
                {"name": "trainer", "isDataConsumer": True},
                {"name": "middle"},
                {"name": "top"},
            ],
            "channels": [
                {"name": "down", "pair": ["trainer", "middle"]},
                {"name": "up", "pair": ["middle", "top"]},
            ],
        }
    )

    def cfg(task: str, role: str, chans: dict[str, dict[str, str]]) -> TaskConfig:
        return TaskConfig(
            job_id="j",
            job_name="h",
            task_id=task,
            role=role,
            design=design,
            job=JobSpec(),
            channels={
                name: ChannelMembership(
                    name=name,
                    group="default",
                    backend="grpc",
                    peers=[PeerRef(task_id=t, role=r) for t, r in peers.items()],
                )
                for name, peers in chans.items()
            },
        )

    discovery = MemoryDiscovery()
    with capture_logs() as logs:
        mid = await open_channels(
            cfg("mid", "middle", {"down": {"t1": "trainer"}, "up": {"top": "top"}}),
            discovery=discovery,
            settings=SETTINGS,
        )
    top = await open_channels(cfg("top", "top", {"up": {"mid": "middle"}}), discovery=discovery)
    t1 = await open_channels(cfg("t1", "trainer", {"down": {"mid": "middle"}}), discovery=discovery)
    try:
        assert sum(e["event"] == "grpc.serving" for e in logs) == 1
        await t1["down"].send("mid", Message("update", round=1))
        await top["up"].send("mid", Message("weights", round=2))
        assert (await mid["up"].recv("top", timeout=5)).round == 2
        assert (await mid["down"].recv("t1", timeout=5)).round == 1
        with pytest.raises(PeerTimeout):
            await mid["up"].recv_any(timeout=0.1)
    finally:
        for s in (t1, top, mid):
            await s.close()
