"""A round stays linear in the number of trainers (issue 21): the work is counted, not timed.

The inbox takes the oldest message among thousands of senders without looking at each of them;
a round's collect checks each peer a constant number of times (it used to sort and check every
pending trainer for each message it received); the result of ``flame.simulate`` is never
formatted at teardown.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

import flame
from flame import Aggregator, Trainer
from flame.channels.channel import Channel
from flame.channels.inbox import Inbox
from flame.errors import PeerTimeout
from flame.messages import Message
from flame.roles.base import RoleResult


class CountingSet(set[str]):
    """A set that counts how often it is searched or walked."""

    def __init__(self, items: Any = ()) -> None:
        super().__init__(items)
        self.lookups = 0
        self.walks = 0

    def __contains__(self, item: object) -> bool:
        self.lookups += 1
        return super().__contains__(item)

    def __iter__(self) -> Iterator[str]:
        self.walks += 1
        return super().__iter__()


def _msg(sender: str, n: int) -> Message:
    return Message("update", 1, sender=sender, message_id=f"{sender}-{n}")


async def test_taking_n_answers_from_n_senders_costs_o_n_lookups() -> None:
    n = 2_000
    box = Inbox("c", "agg")
    senders = [f"t{i:05d}" for i in reversed(range(n))]  # arrival order != name order
    for s in senders:
        box.put(_msg(s, 0))
    pending = CountingSet(senders)
    order = []
    while pending:
        peer, _ = await box.get_any(pending, timeout=0)
        pending.discard(peer)
        order.append(peer)
    assert order == senders  # oldest first
    assert pending.walks <= 4  # only once at most 4 senders are left, each walk of <= 4
    assert pending.lookups <= 2 * n


async def test_the_oldest_message_among_the_wanted_senders_comes_first() -> None:
    box = Inbox("c", "agg")
    for s in ["x", "a", "y", "b", "a", "c", "d", "e"]:
        box.put(_msg(s, len(box._seen)))
    wanted = {"a", "b", "c", "d", "e"}
    got = [(await box.get_any(wanted, timeout=0))[0] for _ in range(5)]
    assert got == ["a", "b", "a", "c", "d"]
    assert (await box.get("x", timeout=0)).sender == "x"  # skipped senders keep their place
    assert (await box.get_any(None, timeout=0))[0] == "y"
    assert (await box.get_any(wanted, timeout=0))[0] == "e"
    with pytest.raises(PeerTimeout):
        await box.get_any(wanted, timeout=0)


async def test_receiving_from_one_sender_at_a_time_keeps_the_inbox_small() -> None:
    box = Inbox("c", "t1")
    for i in range(10_000):
        box.put(_msg("agg", i))
        assert (await box.get("agg", timeout=0)).message_id == f"agg-{i}"
    assert len(box._heads) <= 64 + 2  # stale entries are dropped, not kept for ever
    box.put(_msg("agg", -1))
    assert (await box.get_any(None, timeout=0))[1].message_id == "agg--1"


class ScaleTrainer(Trainer):
    def initialize(self) -> None:
        self.model = {"w": np.zeros(4, dtype=np.float32)}

    def load_data(self) -> None:
        assert self.config.dataset is not None
        self.dataset_size = 1 + int(self.config.dataset.name[1:]) % 3

    def train(self) -> None:
        self.model = {"w": self.model["w"] + np.float32(self.dataset_size)}

    def evaluate(self) -> dict[str, float]:
        return {"accuracy": 0.5}


class ScaleAggregator(Aggregator):
    def initialize(self) -> None:
        self.model = {"w": np.zeros(4, dtype=np.float32)}


def _job(n: int, rounds: int) -> tuple[dict[str, Any], dict[str, Any]]:
    design = {
        "roles": [
            {"name": "trainer", "isDataConsumer": True, "groupAssociation": [{"c": "default"}]},
            {"name": "aggregator", "replica": 1, "groupAssociation": [{"c": "default"}]},
        ],
        "channels": [{"name": "c", "pair": ["trainer", "aggregator"]}],
    }
    spec = {
        "rounds": rounds,
        "datasets": {"default": [f"d{i}" for i in range(n)]},
        "min_trainers": n,
        "round_timeout": 300,
    }
    return design, spec


def test_a_round_checks_each_peer_a_constant_number_of_times(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    n, rounds = 300, 2
    checks = 0
    original = Channel._check_peer

    def counting(self: Channel, peer: str) -> None:
        nonlocal checks
        checks += 1
        original(self, peer)

    monkeypatch.setattr(Channel, "_check_peer", counting)
    result = flame.simulate(
        _job(n, rounds), roles={"trainer": ScaleTrainer, "aggregator": ScaleAggregator}
    )
    assert [h["round"] for h in result.history] == [0, 1, 2]
    assert result.history[-1]["trainers"] == n
    # per round: one send and one receive per trainer at each end (+ joins): a few n,
    # where checking every pending peer for each answer was n * n / 2
    assert checks <= 8 * n * (rounds + 1)


class Probe:
    """Counts how often it is formatted."""

    formatted = 0

    def __repr__(self) -> str:
        Probe.formatted += 1
        return "Probe()"


class ReportingAggregator(ScaleAggregator):
    def result(self) -> RoleResult:
        return dataclasses.replace(super().result(), report={"probe": Probe()})


def test_simulate_never_formats_its_result() -> None:
    Probe.formatted = 0
    result = flame.simulate(
        _job(20, 1), roles={"trainer": ScaleTrainer, "aggregator": ReportingAggregator}
    )
    assert len(result.tasks) == 21 and isinstance(result.report["probe"], Probe)
    assert Probe.formatted == 0
