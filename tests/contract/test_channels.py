"""One behaviour suite for every channel backend: inproc, grpc (loopback), mqtt (Mosquitto)."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import numpy as np
import pytest

from flame.channels import BroadcastError, ChannelSet, InprocHub, open_channels
from flame.channels.channel import Channel
from flame.channels.discovery import MemoryDiscovery
from flame.channels.settings import ChannelSettings
from flame.config import ChannelMembership, DesignSchema, JobSpec, PeerRef, TaskConfig
from flame.errors import ChannelError, PeerTimeout
from flame.messages import Message

BACKENDS = ["inproc", "grpc", "mqtt"]
DESIGN = DesignSchema.model_validate(
    {
        "roles": [{"name": "trainer", "isDataConsumer": True}, {"name": "aggregator"}],
        "channels": [{"name": "param", "pair": ["trainer", "aggregator"]}],
    }
)


def _broker_up() -> bool:
    try:
        socket.create_connection(("127.0.0.1", 1883), timeout=1).close()
    except OSError:
        return False
    return True


def _config(job_id: str, task_id: str, role: str, peers: dict[str, str]) -> TaskConfig:
    return TaskConfig(
        job_id=job_id,
        job_name="contract",
        task_id=task_id,
        role=role,
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
    )


@dataclass
class Job:
    backend: str
    agg: Channel
    t1: Channel
    t2: Channel
    sets: list[ChannelSet]


SETTINGS = ChannelSettings(send_timeout=60.0, connect_timeout=5.0)


async def _open_job(backend: str, settings: ChannelSettings = SETTINGS) -> Job:
    if backend == "mqtt" and not _broker_up():
        pytest.skip("no MQTT broker on 127.0.0.1:1883")
    job_id = f"job-{uuid.uuid4().hex[:12]}"
    hub = InprocHub(job_id)
    discovery = MemoryDiscovery()
    configs = [
        _config(job_id, "agg", "aggregator", {"t1": "trainer", "t2": "trainer"}),
        _config(job_id, "t1", "trainer", {"agg": "aggregator"}),
        _config(job_id, "t2", "trainer", {"agg": "aggregator"}),
    ]
    sets = [
        await open_channels(
            c,
            hub=hub,
            backend=backend,
            discovery=discovery,
            settings=settings,  # type: ignore[arg-type]
        )
        for c in configs
    ]
    return Job(backend, sets[0]["param"], sets[1]["param"], sets[2]["param"], sets)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def job(backend: str) -> AsyncIterator[Job]:
    j = await _open_job(backend)
    yield j
    for s in j.sets:
        await s.close()


@pytest.fixture
async def impatient_job(backend: str) -> AsyncIterator[Job]:
    """A job whose sends give up after 1 s, for the dead-peer cases."""
    j = await _open_job(backend, ChannelSettings(send_timeout=1.0, connect_timeout=5.0))
    yield j
    for s in j.sets:
        await s.close()


def _weights(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "conv.weight": rng.standard_normal((8, 3, 3, 3)).astype(np.float32),
        "conv.bias": rng.standard_normal(8).astype(np.float64),
        "half": rng.standard_normal((4, 5)).astype(np.float16),
        "steps": np.array([3, -1, 7], dtype=np.int64),
        "mask": np.array([True, False, True]),
        "empty": np.zeros((0, 3), dtype=np.float32),
        "special": np.array([np.nan, np.inf, -np.inf, -0.0, 1e-45], dtype=np.float32),
    }


async def test_channels_satisfy_the_interface(job: Job) -> None:
    for c in (job.agg, job.t1, job.t2):
        assert isinstance(c, Channel)
    assert job.agg.peers() == ["t1", "t2"]
    assert job.agg.peers("trainer") == ["t1", "t2"]
    assert job.agg.peers("aggregator") == []
    assert job.t1.peers() == ["agg"]


async def test_messages_from_one_sender_arrive_in_order(job: Job) -> None:
    for i in range(20):
        await job.t1.send("agg", Message("update", round=i, meta={"i": i}))
    got = [await job.agg.recv("t1", timeout=5) for _ in range(20)]
    assert [m.meta["i"] for m in got] == list(range(20))
    assert {(m.sender, m.channel, m.kind) for m in got} == {("t1", "param", "update")}


async def test_recv_from_a_specific_peer_skips_others(job: Job) -> None:
    await job.t1.send("agg", Message("update", meta={"from": "t1"}))
    await job.t2.send("agg", Message("update", meta={"from": "t2"}))
    assert (await job.agg.recv("t2", timeout=5)).meta == {"from": "t2"}
    assert (await job.agg.recv("t1", timeout=5)).meta == {"from": "t1"}


async def test_recv_any_returns_whichever_arrives(job: Job) -> None:
    waiter = asyncio.create_task(job.agg.recv_any(timeout=5))
    await job.t2.send("agg", Message("update", round=3))
    peer, msg = await waiter
    assert (peer, msg.sender, msg.round) == ("t2", "t2", 3)
    await job.t1.send("agg", Message("update", round=4))
    peer, msg = await job.agg.recv_any(["t1", "t2"], timeout=5)
    assert (peer, msg.round) == ("t1", 4)


async def test_broadcast_reaches_every_peer(job: Job) -> None:
    w = _weights(1)
    await job.agg.broadcast(Message("weights", round=2, weights=w))
    a = await job.t1.recv("agg", timeout=5)
    b = await job.t2.recv("agg", timeout=5)
    assert a.message_id == b.message_id
    for m in (a, b):
        assert m.weights is not None
        np.testing.assert_array_equal(m.weights["conv.weight"], w["conv.weight"])
    await job.agg.broadcast(Message("done"), peers=["t2"])
    assert (await job.t2.recv("agg", timeout=5)).kind == "done"
    with pytest.raises(PeerTimeout):
        await job.t1.recv("agg", timeout=0.2)


async def test_recv_times_out_with_peer_timeout(job: Job) -> None:
    with pytest.raises(PeerTimeout):
        await job.agg.recv("t1", timeout=0.1)
    with pytest.raises(PeerTimeout):
        await job.agg.recv_any(timeout=0.1)
    # a timeout loses nothing: a later message is still received
    await job.t1.send("agg", Message("update"))
    assert (await job.agg.recv("t1", timeout=5)).kind == "update"


async def test_a_duplicate_delivery_is_dropped(job: Job) -> None:
    msg = Message("update", round=1, weights={"w": np.ones(3, np.float32)})
    await job.t1.send("agg", msg)
    await job.t1.send("agg", msg)  # a redelivery: same message id
    await job.t1.send("agg", Message("update", round=2))
    first = await job.agg.recv("t1", timeout=5)
    second = await job.agg.recv("t1", timeout=5)
    assert (first.message_id, first.round, second.round) == (msg.message_id, 1, 2)
    with pytest.raises(PeerTimeout):
        await job.agg.recv("t1", timeout=0.2)


async def test_a_20mb_message_arrives_intact(job: Job) -> None:
    big = np.random.default_rng(7).standard_normal(5_000_000).astype(np.float32)  # 20 MB
    await job.t1.send("agg", Message("update", weights={"big": big}, meta={"n": 1}))
    got = await job.agg.recv("t1", timeout=30)
    assert got.weights is not None and got.meta == {"n": 1}
    assert hashlib.sha256(got.weights["big"].tobytes()).digest() == (
        hashlib.sha256(big.tobytes()).digest()
    )


async def test_weights_round_trip_bit_exact(job: Job) -> None:
    w = _weights(2)
    await job.agg.send("t1", Message("weights", round=5, weights=w, meta={"lr": 0.1}))
    got = await job.t1.recv("agg", timeout=5)
    assert got.weights is not None
    assert got.weights.keys() == w.keys()
    for k, v in w.items():
        assert got.weights[k].dtype == v.dtype and got.weights[k].shape == v.shape, k
        assert got.weights[k].tobytes() == v.tobytes(), k
    got.weights["conv.weight"] += 1  # received tensors are the receiver's to change
    assert got.meta == {"lr": 0.1} and got.round == 5


async def test_close_is_idempotent_and_final(job: Job) -> None:
    await job.t1.close()
    await job.t1.close()
    with pytest.raises(ChannelError):
        await job.t1.send("agg", Message("update"))
    for s in job.sets:
        await s.close()
        await s.close()


async def test_tensors_the_wire_cannot_carry_are_refused(job: Job) -> None:
    with pytest.raises(ChannelError):
        await job.t1.send("agg", Message("update", weights={"z": np.ones(2, np.complex64)}))
    with pytest.raises(PeerTimeout):
        await job.agg.recv("t1", timeout=0.1)


async def test_unknown_peers_are_refused(job: Job) -> None:
    with pytest.raises(ChannelError):
        await job.t1.send("t2", Message("update"))
    with pytest.raises(ChannelError):
        await job.agg.recv("nobody", timeout=0.1)


async def test_sending_to_a_dead_peer_fails(impatient_job: Job) -> None:
    job = impatient_job
    await job.sets[0].close()  # the aggregator is gone
    with pytest.raises(ChannelError):
        await job.t1.send("agg", Message("update"))


async def test_a_broadcast_that_misses_a_dead_peer_says_which(impatient_job: Job) -> None:
    job = impatient_job
    await job.sets[2].close()  # t2 is gone
    with pytest.raises(BroadcastError) as info:
        await job.agg.broadcast(Message("weights", round=1))
    assert info.value.reached == ["t1"] and list(info.value.failed) == ["t2"]
    assert (await job.t1.recv("agg", timeout=5)).round == 1


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["grpc", "mqtt"])
async def test_a_200mb_model_crosses_intact(backend: str) -> None:
    j = await _open_job(backend, ChannelSettings(send_timeout=60, connect_timeout=5))
    try:
        rng = np.random.default_rng(3)
        model = {f"layer{i}": rng.standard_normal(5_000_000).astype(np.float32) for i in range(10)}
        digest = hashlib.sha256(b"".join(model[k].tobytes() for k in sorted(model))).hexdigest()
        recv = asyncio.create_task(j.agg.recv("t1", timeout=60))
        await j.t1.send("agg", Message("update", weights=model))
        got = await recv
        assert got.weights is not None
        back = hashlib.sha256(b"".join(got.weights[k].tobytes() for k in sorted(got.weights)))
        assert back.hexdigest() == digest
    finally:
        for s in j.sets:
            await s.close()
