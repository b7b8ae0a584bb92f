"""Folding in the aggregator role (issue 21.4): updates are added to the round's running aggregate
in sender order as they arrive, and the aggregator keeps none of them once added."""

from __future__ import annotations

import asyncio
import gc
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import flame
from flame.protocol import Update as Body
from flame.roles import load_role_class
from flame.roles.aggregator import Received
from flame.roles.folding import GroupMean, SenderOrder

# -- SenderOrder ------------------------------------------------------------------------------


def _answer(sender: str, value: float, size: int = 4) -> Received:
    w = {"w": np.full(size, value, np.float32)}
    return Received(sender, Body(num_samples=1.0), w, {"c": w["w"] * 2})


@pytest.mark.parametrize("hold_bytes", [1 << 20, 0])
def test_answers_are_added_in_sender_order_whatever_order_they_arrive_in(
    hold_bytes: int, tmp_path: Path
) -> None:
    added: list[tuple[str, float, float]] = []
    order = SenderOrder(
        lambda a: added.append((a.sender, float(a.weights["w"][0]), float(a.extras["c"][0]))),
        ["d", "a", "c", "b", "e"],
        hold_bytes=hold_bytes,
        spill_dir=tmp_path,
    )
    order.offer(_answer("c", 3.0))
    order.offer(_answer("e", 5.0))
    assert added == []
    order.skip("b")
    order.offer(_answer("a", 1.0))
    # c's turn has come: added at once from memory; from disk once the round is over (read
    # back now, beside an update in hand, it would take a fourth model's memory)
    assert [s for s, *_ in added] == (["a", "c"] if hold_bytes else ["a"])
    order.close()  # d never answered
    assert added == [("a", 1.0, 2.0), ("c", 3.0, 6.0), ("e", 5.0, 10.0)]
    assert list(tmp_path.iterdir()) == []  # nothing left on disk


def test_in_order_answers_are_never_held() -> None:
    added: list[str] = []
    order = SenderOrder(lambda a: added.append(a.sender), ["a", "b", "c"], hold_bytes=0)
    for s in "abc":
        order.offer(_answer(s, 1.0))
        assert added[-1] == s
    order.close()
    assert order.peak_held == 0


# -- the aggregator role ----------------------------------------------------------------------

EXAMPLES = Path(__file__).parents[3] / "examples"
JOB = EXAMPLES / "central-numpy"
NumpyTrainer: Any = load_role_class(JOB / "trainer" / "main.py")
NumpyAggregator: Any = load_role_class(JOB / "aggregator" / "main.py")


class WatchesUpdates(NumpyAggregator):  # type: ignore[misc]
    """Keeps a weak reference to every tensor it received; checks at aggregation time."""

    refs: list[weakref.ref[np.ndarray]] = []
    alive_at_aggregate: list[int] = []

    def validate(self, peer: str, msg: Any, expected_round: int | None = None) -> Received:
        got = super().validate(peer, msg, expected_round)
        self.refs.extend(weakref.ref(a) for a in got.weights.values())
        return got

    async def aggregate(self) -> None:  # type: ignore[override]
        gc.collect()
        self.alive_at_aggregate.append(sum(r() is not None for r in self.refs))
        self.refs.clear()
        await super().aggregate.run()


def test_the_aggregator_keeps_no_received_update_once_it_is_folded() -> None:
    WatchesUpdates.alive_at_aggregate.clear()
    res = flame.simulate(
        JOB,
        roles={"trainer": NumpyTrainer, "aggregator": WatchesUpdates},
        overrides={"rounds": 3, "hyperparameters": {"lr": 1.0, "local_steps": 5}},
    )
    assert [h["trainers"] for h in res.history[1:]] == [10.0, 10.0, 10.0]
    assert WatchesUpdates.alive_at_aggregate[:3] == [0, 0, 0]


def test_a_middle_aggregators_group_mean_keeps_every_shape_and_dtype() -> None:
    glob = {"w": np.array(0.0, np.float32), "steps": np.array(0, np.int64)}
    group = GroupMean(glob, {})
    for n, w, steps in ((1.0, 1.0, 3), (3.0, 3.0, 4)):
        weights = {"w": np.array(w, np.float32), "steps": np.array(steps, np.int64)}
        group.add(Received(f"t{n}", Body(num_samples=n), weights, {}))
    mean, extras = group.result()
    assert extras is None
    assert mean["w"].shape == () and mean["w"].dtype == np.float32 and float(mean["w"]) == 2.5
    assert mean["steps"].shape == () and mean["steps"].dtype == np.int64 and int(mean["steps"]) == 4


def test_a_group_where_nobody_worked_gets_the_plain_mean() -> None:
    glob = {"w": np.zeros(2, np.float32)}
    group = GroupMean(glob, {})
    for i, v in enumerate((1.0, 2.0, 6.0)):
        group.add(Received(f"t{i}", Body(num_samples=0), {"w": np.full(2, v, np.float32)}, {}))
    np.testing.assert_array_equal(group.result()[0]["w"], [3.0, 3.0])


class ReverseArrival(NumpyTrainer):  # type: ignore[misc]
    """Answers late in proportion to its index, so updates arrive in reverse sender order."""

    async def upload(self) -> None:  # type: ignore[override]
        index = int(self.config.task_id.split("-")[1])
        await asyncio.sleep(0.01 * (10 - index))  # orders arrival; nothing waits on it
        await super().upload.run()


class SpillsEverything(NumpyAggregator):  # type: ignore[misc]
    hold_bytes = 0  # every early update waits on disk


@pytest.mark.parametrize("aggregator", [NumpyAggregator, SpillsEverything])
def test_the_model_does_not_depend_on_the_order_updates_arrive_in(aggregator: Any) -> None:
    overrides = {"rounds": 3, "hyperparameters": {"lr": 1.0, "local_steps": 5}}
    base = flame.simulate(
        JOB, roles={"trainer": NumpyTrainer, "aggregator": NumpyAggregator}, overrides=overrides
    )
    reversed_ = flame.simulate(
        JOB, roles={"trainer": ReverseArrival, "aggregator": aggregator}, overrides=overrides
    )
    for name, value in base.weights.items():
        np.testing.assert_array_equal(reversed_.weights[name], value)
