"""The Ray backend's hub between hosts, with two hubs in one event loop (no Ray needed): what
crosses, how often, and what a closed receiver does to a sender on another host."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

import numpy as np
import pytest

from flame.errors import ChannelError
from flame.messages import Message
from flame.ray_backend import Parcel, RayHub


class Host:
    """A host's handle as Ray gives it: ``host.deliver.remote(batch)`` is awaitable."""

    def __init__(self) -> None:
        self.hub: RayHub | None = None
        self.batches: list[list[Parcel]] = []

    @property
    def deliver(self) -> Host:
        return self

    def remote(self, batch: list[Parcel]) -> Awaitable[None]:
        self.batches.append(batch)

        async def arrive() -> None:
            assert self.hub is not None
            self.hub.deliver_parcels(batch)

        return arrive()


def two_hosts(where: dict[str, int]) -> tuple[RayHub, RayHub, list[Host]]:
    hosts = [Host(), Host()]
    hubs = [RayHub("job", i, where, hosts) for i in range(2)]
    for host, hub in zip(hosts, hubs, strict=True):
        host.hub = hub
    return hubs[0], hubs[1], hosts


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


def model(value: float) -> Message:
    return Message(
        kind="weights",
        weights={"w": np.full(4, value, np.float32)},
        sender="agg",
        channel="c",
        job_id="job",
    )


async def test_a_broadcast_to_another_host_is_one_call_and_each_receiver_owns_its_copy() -> None:
    where: dict[str, Any] = {"agg": 0, "t1": 1, "t2": 1, "t3": 1}
    here, there, hosts = two_hosts(where)
    boxes = [there.open_inbox("c", t) for t in ("t1", "t2", "t3")]
    msg = model(1.0)
    for t in ("t1", "t2", "t3"):
        here.deliver(t, msg)
    msg.weights["w"][:] = 9.0  # the sender trains in place right after sending
    await settle()
    assert len(hosts[1].batches) == 1
    (batch,) = hosts[1].batches
    assert len({id(data) for _, _, data in batch}) == 1  # the envelope is encoded once
    got = [await box.get("agg", timeout=5) for box in boxes]
    got[0].weights["w"][:] = 5.0
    assert [float(m.weights["w"][0]) for m in got] == [5.0, 1.0, 1.0]


async def test_a_send_to_a_task_that_ended_on_another_host_fails_at_once() -> None:
    here, there, hosts = two_hosts({"agg": 0, "t1": 1})
    box = there.open_inbox("c", "t1")
    box.close()  # the trainer's task ended
    await settle()
    with pytest.raises(ChannelError, match="receiver has closed"):
        here.deliver("t1", model(1.0))
    assert hosts[1].batches == []  # nothing was sent for it
