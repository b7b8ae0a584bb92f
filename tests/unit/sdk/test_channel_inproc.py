import asyncio

import numpy as np
import pytest

from flame.channels import InprocChannel, InprocHub, open_channels
from flame.channels.channel import Channel
from flame.config import ChannelMembership, DesignSchema, JobSpec, PeerRef, TaskConfig
from flame.errors import ChannelError, ConfigError, PeerTimeout
from flame.messages import Message

DESIGN = DesignSchema.model_validate(
    {
        "roles": [
            {"name": "trainer", "isDataConsumer": True},
            {"name": "aggregator"},
        ],
        "channels": [{"name": "param", "pair": ["trainer", "aggregator"], "backend": "grpc"}],
    }
)


def _config(task_id: str, role: str, peers: list[tuple[str, str]]) -> TaskConfig:
    return TaskConfig(
        job_id="job-1",
        job_name="j",
        task_id=task_id,
        role=role,
        design=DESIGN,
        job=JobSpec(),
        channels={
            "param": ChannelMembership(
                name="param",
                group="default",
                backend="grpc",
                peers=[PeerRef(task_id=t, role=r) for t, r in peers],
            )
        },
    )


async def test_a_message_sent_before_the_receiver_opens_is_kept() -> None:
    hub = InprocHub("job-1")
    t1 = InprocChannel("param", "t1", [PeerRef(task_id="agg", role="aggregator")], hub)
    await t1.send("agg", Message("update", 1))
    agg = InprocChannel("param", "agg", [PeerRef(task_id="t1", role="trainer")], hub)
    assert isinstance(agg, Channel)
    got = await agg.recv("t1", timeout=1)
    assert (got.kind, got.sender, got.channel, got.job_id) == ("update", "t1", "param", "job-1")


async def test_receivers_get_their_own_copy_of_the_tensors() -> None:
    hub = InprocHub()
    agg = InprocChannel(
        "param", "agg", [PeerRef(task_id=t, role="trainer") for t in ("t1", "t2")], hub
    )
    ends = [
        InprocChannel("param", t, [PeerRef(task_id="agg", role="aggregator")], hub)
        for t in ("t1", "t2")
    ]
    w = {"w": np.ones(4, np.float32)}
    await agg.broadcast(Message("weights", 0, weights=w))
    a = await ends[0].recv("agg", timeout=1)
    b = await ends[1].recv("agg", timeout=1)
    assert a.weights is not None and b.weights is not None
    a.weights["w"] += 1  # training in place on one trainer
    np.testing.assert_array_equal(b.weights["w"], np.ones(4, np.float32))
    np.testing.assert_array_equal(w["w"], np.ones(4, np.float32))


async def test_sending_to_a_closed_peer_fails_and_reopening_works() -> None:
    hub = InprocHub()
    t1 = InprocChannel("param", "t1", [PeerRef(task_id="agg", role="aggregator")], hub)
    agg = InprocChannel("param", "agg", [PeerRef(task_id="t1", role="trainer")], hub)
    await agg.close()
    with pytest.raises(ChannelError):
        await t1.send("agg", Message("update"))
    agg = InprocChannel("param", "agg", [PeerRef(task_id="t1", role="trainer")], hub)
    await t1.send("agg", Message("update"))
    assert (await agg.recv("t1", timeout=1)).kind == "update"


async def test_unknown_peers_are_refused() -> None:
    hub = InprocHub()
    t1 = InprocChannel("param", "t1", [PeerRef(task_id="agg", role="aggregator")], hub)
    with pytest.raises(ChannelError):
        await t1.send("t9", Message("update"))
    with pytest.raises(ChannelError):
        await t1.recv("t9", timeout=0.01)


async def test_close_wakes_a_waiting_receiver() -> None:
    hub = InprocHub()
    t1 = InprocChannel("param", "t1", [PeerRef(task_id="agg", role="aggregator")], hub)
    waiter = asyncio.create_task(t1.recv("agg"))
    await asyncio.sleep(0)
    await t1.close()
    with pytest.raises(ChannelError) as info:
        await waiter
    assert not isinstance(info.value, PeerTimeout)


async def test_open_channels_builds_a_set_by_name() -> None:
    hub = InprocHub("job-1")
    agg_cfg = _config("agg", "aggregator", [("t1", "trainer"), ("t2", "trainer")])
    t_cfgs = [_config(t, "trainer", [("agg", "aggregator")]) for t in ("t1", "t2")]
    async with await open_channels(agg_cfg, hub=hub, backend="inproc") as agg:
        trainers = [await open_channels(c, hub=hub, backend="inproc") for c in t_cfgs]
        assert "param" in agg and list(agg) == ["param"]
        assert agg["param"].peers("trainer") == ["t1", "t2"]
        for i, t in enumerate(trainers):
            await t["param"].send("agg", Message("update", meta={"i": i}))
        got = {(await agg["param"].recv_any(timeout=1))[0] for _ in range(2)}
        assert got == {"t1", "t2"}
        with pytest.raises(ConfigError):
            agg["nope"]
        for t in trainers:
            await t.close()
            await t.close()


async def test_open_channels_needs_a_hub_for_inproc() -> None:
    with pytest.raises(ConfigError):
        await open_channels(_config("agg", "aggregator", []), backend="inproc")


def test_backend_precedence_override_then_job_then_design() -> None:
    from flame.channels.factory import backend_of

    cfg = _config("agg", "aggregator", [])
    assert backend_of(cfg, "param") == "grpc"  # the design's channel backend
    job_mqtt = cfg.model_copy(update={"job": JobSpec(backend="mqtt")})
    assert backend_of(job_mqtt, "param") == "mqtt"  # the job overrides the design
    assert backend_of(job_mqtt, "param", "inproc") == "inproc"  # simulate overrides both
