"""Strategies checkpoint as plain data: a rule restored mid-run continues bit-identically."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flame.aggregation import FedBuff, Strategy, StrategyState, Update, make_strategy
from flame.config import OptimizerSpec
from flame.errors import ConfigError, RejectedUpdate
from flame.tensors import from_bytes, to_bytes

SHAPES = {"conv.weight": (2, 3, 3), "fc.bias": (4,)}


def through_checkpoint(state: StrategyState) -> StrategyState:
    """What an aggregator's checkpoint does: tensors as safetensors, the rest as JSON."""
    return StrategyState(
        tensors=from_bytes(to_bytes(state.tensors)), data=json.loads(json.dumps(state.data))
    )


def round_updates(rng: np.random.Generator, x: dict[str, np.ndarray], rnd: int) -> list[Update]:
    ups = []
    for i in range(int(rng.integers(3, 6))):
        w = {k: (v + rng.standard_normal(v.shape) * 0.1).astype(np.float32) for k, v in x.items()}
        dc = {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in x.items()}
        ups.append(Update(f"t{i}", w, int(rng.integers(1, 100)), base_round=rnd, extras=dc))
    return ups


def run(
    strat: Strategy, x: dict[str, np.ndarray], seed: int, rounds: range
) -> dict[str, np.ndarray]:
    for rnd in rounds:
        rng = np.random.default_rng([seed, rnd])
        x = strat.aggregate(x, round_updates(rng, x, rnd), rnd)
    return x


STATEFUL = [
    ("fedadam", {"eta": 0.03, "beta1": 0.5, "beta2": 0.9, "tau": 1e-2}),
    ("fedyogi", {}),
    ("fedadagrad", {"eta": 0.2}),
    ("scaffold", {"global_lr": 0.7}),
    ("fedprox", {"mu": 0.1}),
    ("trimmed_mean", {"beta": 0.2}),
    ("phocas", {"beta": 0.2}),
]


@pytest.mark.parametrize(("name", "kwargs"), STATEFUL)
@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), split=st.integers(0, 5))
def test_a_restored_strategy_continues_bit_identically(
    name: str, kwargs: dict, seed: int, split: int
) -> None:
    spec = OptimizerSpec(name=name, kwargs=kwargs)
    x0 = {
        k: np.random.default_rng(seed).standard_normal(s).astype(np.float32)
        for k, s in SHAPES.items()
    }
    undisturbed = run(make_strategy(spec), x0, seed, range(6))

    first = make_strategy(spec)
    mid = run(first, x0, seed, range(split))
    checkpoint = through_checkpoint(first.state())
    del first  # the aggregator crashed
    resumed = make_strategy(spec)
    resumed.load_state(checkpoint)
    if name == "scaffold":
        assert resumed.to_trainers().keys() == (x0.keys() if split else set())
    final = run(resumed, mid, seed, range(split, 6))
    for k in SHAPES:
        np.testing.assert_array_equal(final[k], undisturbed[k])


def _async_run(
    buff: FedBuff, x: dict[str, np.ndarray], rnd: int, arrivals: list[Update]
) -> tuple[dict[str, np.ndarray], int]:
    for u in arrivals:
        try:
            ready = buff.add(u, x, rnd)
        except RejectedUpdate:
            continue
        if ready:
            x = buff.flush(x, rnd)
            rnd += 1
    return x, rnd


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), split=st.integers(0, 30), k=st.integers(1, 4))
def test_fedbuff_restored_mid_buffer_continues_bit_identically(
    seed: int, split: int, k: int
) -> None:
    rng = np.random.default_rng(seed)
    x0 = {k_: rng.standard_normal(s).astype(np.float32) for k_, s in SHAPES.items()}
    # Updates arrive with varying staleness, some too stale (max_staleness=2) to be used.
    arrivals = [
        Update(
            f"t{i % 5}",
            {k_: rng.standard_normal(s).astype(np.float32) for k_, s in SHAPES.items()},
            1,
            base_round=max(0, i // k - int(rng.integers(0, 4))),
        )
        for i in range(30)
    ]
    spec = OptimizerSpec(name="fedbuff", kwargs={"k": k, "server_lr": 0.8, "max_staleness": 2})
    a = make_strategy(spec)
    assert isinstance(a, FedBuff)
    want, want_rnd = _async_run(a, x0, 0, arrivals)

    b = make_strategy(spec)
    assert isinstance(b, FedBuff)
    mid, rnd = _async_run(b, x0, 0, arrivals[:split])
    c = make_strategy(spec)
    assert isinstance(c, FedBuff)
    c.load_state(through_checkpoint(b.state()))
    assert c.count == b.count and c.senders == b.senders
    got, got_rnd = _async_run(c, mid, rnd, arrivals[split:])
    assert got_rnd == want_rnd
    for k_ in SHAPES:
        np.testing.assert_array_equal(got[k_], want[k_])


def test_state_is_a_snapshot_not_a_live_view() -> None:
    strat = make_strategy(OptimizerSpec(name="fedadam"))
    x = {"w": np.zeros(3, np.float32)}
    x = strat.aggregate(x, [Update("a", {"w": np.ones(3, np.float32)}, 1)], 0)
    snap = strat.state()
    before = {k: v.copy() for k, v in snap.tensors.items()}
    strat.aggregate(x, [Update("a", {"w": np.full(3, 5.0, np.float32)}, 1)], 1)
    for k, v in snap.tensors.items():
        np.testing.assert_array_equal(v, before[k])


def test_fedadam_state_holds_both_moments() -> None:
    strat = make_strategy(OptimizerSpec(name="fedadam"))
    strat.aggregate(
        {"w": np.zeros(3, np.float32)}, [Update("a", {"w": np.ones(3, np.float32)}, 1)], 0
    )
    state = strat.state()
    assert set(state.tensors) == {"m/w", "v/w"}
    assert state.data["params"]["beta2"] == 0.99
    json.dumps(state.data)


def test_loading_another_rules_state_is_a_config_error() -> None:
    adam = make_strategy(OptimizerSpec(name="fedadam"))
    with pytest.raises(ConfigError, match="fedadam"):
        make_strategy(OptimizerSpec(name="fedyogi")).load_state(adam.state())
    with pytest.raises(ConfigError):
        make_strategy(OptimizerSpec(name="fedadam")).load_state(
            StrategyState(tensors={"m/w": np.zeros(1)}, data={"name": "fedadam"})
        )
