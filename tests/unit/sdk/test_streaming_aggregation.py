"""Streaming aggregation (issue 21.4): a round's updates are folded into a running aggregate one
at a time, so the aggregator's memory does not grow with the number of trainers."""

from __future__ import annotations

import tracemalloc
from typing import Any

import numpy as np
import pytest

from flame.aggregation import Update, make_strategy
from flame.aggregation.streaming import Streaming
from flame.config import OptimizerSpec
from flame.errors import AggregationError

STREAMING = ["fedavg", "fedprox", "fedadam", "fedyogi", "fedadagrad"]
BATCH_ONLY = ["fednova", "scaffold", "fedbuff", "trimmed_mean", "phocas", "median", "krum"]
SHAPES: dict[str, tuple[tuple[int, ...], Any]] = {
    "w": ((5, 3), np.float32),
    "b": ((3,), np.float64),
    "h": ((2,), np.float16),
    "scalar": ((), np.float32),
    "count": ((), np.int64),
    "mask": ((4,), np.bool_),
}


def model(rng: np.random.Generator) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for name, (shape, dtype) in SHAPES.items():
        if np.dtype(dtype).kind == "b":
            out[name] = rng.random(shape) < 0.5
        elif np.dtype(dtype).kind == "i":
            out[name] = np.asarray(rng.integers(0, 100, shape), dtype=dtype)
        else:
            out[name] = np.asarray(rng.standard_normal(shape), dtype=dtype)
    return out


def updates(rng: np.random.Generator, n: int) -> list[Update]:
    return [
        Update(sender=f"t{i:02d}", weights=model(rng), num_samples=int(rng.integers(1, 500)))
        for i in range(n)
    ]


def strategy(name: str) -> Any:
    return make_strategy(OptimizerSpec(name=name))


@pytest.mark.parametrize("name", STREAMING)
def test_a_fold_fed_one_update_at_a_time_equals_the_batch_rule(name: str) -> None:
    rng = np.random.default_rng(1)
    glob = model(rng)
    batch_rule, stream_rule = strategy(name), strategy(name)
    for rnd in (1, 2, 3):  # the adaptive rules' moments carry over rounds
        ups = updates(rng, 7)
        want = batch_rule.aggregate(glob, ups, rnd)
        fold = stream_rule.begin(glob, rnd)
        for i in rng.permutation(len(ups)):
            fold.add(ups[i])
        got = fold.result()
        assert got.keys() == want.keys()
        for k, ref in glob.items():
            assert got[k].shape == ref.shape and got[k].dtype == ref.dtype, k
            tol = 1e-2 if ref.dtype == np.float16 else 1e-5
            np.testing.assert_allclose(
                got[k].astype(np.float64), want[k].astype(np.float64), rtol=tol, atol=tol
            )
        glob = want


def test_weights_are_exact_sample_counts_divided_once() -> None:
    glob = {"w": np.zeros(3, np.float64)}
    fold = strategy("fedavg").begin(glob, 1)
    fold.add(Update("a", {"w": np.array([1.0, 2.0, 3.0])}, num_samples=1))
    fold.add(Update("b", {"w": np.array([4.0, 5.0, 6.0])}, num_samples=3))
    fold.add(Update("c", {"w": np.array([9.0, 9.0, 9.0])}, num_samples=0))
    np.testing.assert_array_equal(fold.result()["w"], [13 / 4, 17 / 4, 21 / 4])


def test_the_same_order_gives_a_bit_identical_result() -> None:
    rng = np.random.default_rng(2)
    glob, ups = model(rng), updates(rng, 9)
    results = []
    for _ in range(2):
        fold = strategy("fedavg").begin(glob, 1)
        for u in ups:
            fold.add(u)
        results.append(fold.result())
    for k in glob:
        np.testing.assert_array_equal(results[0][k], results[1][k])


def test_a_refused_update_leaves_the_running_sum_untouched() -> None:
    rng = np.random.default_rng(3)
    glob = model(rng)
    good = updates(rng, 2)
    bad_shape = Update("x1", {**good[0].weights, "w": np.ones((3, 5), np.float32)}, 10)
    missing = Update("x2", {k: v for k, v in good[0].weights.items() if k != "b"}, 10)
    negative = Update("x3", good[0].weights, -1)
    clean, dirty = strategy("fedavg").begin(glob, 1), strategy("fedavg").begin(glob, 1)
    clean.add(good[0])
    dirty.add(good[0])
    for bad in (bad_shape, missing, negative, good[0]):  # good[0] again: a duplicate sender
        with pytest.raises(AggregationError):
            dirty.check(bad)
        with pytest.raises(AggregationError):
            dirty.add(bad)
    clean.add(good[1])
    dirty.add(good[1])
    want, got = clean.result(), dirty.result()
    for k in glob:
        np.testing.assert_array_equal(got[k], want[k])


def test_an_empty_or_sample_less_fold_is_an_error() -> None:
    glob = {"w": np.zeros(2, np.float32)}
    with pytest.raises(AggregationError, match="no updates"):
        strategy("fedavg").begin(glob, 1).result()
    fold = strategy("fedavg").begin(glob, 1)
    fold.add(Update("a", {"w": np.ones(2, np.float32)}, 0))
    with pytest.raises(AggregationError, match="0 samples"):
        fold.result()


@pytest.mark.parametrize("name", STREAMING)
def test_streaming_rules_say_so_and_the_others_do_not(name: str) -> None:
    assert isinstance(strategy(name), Streaming)


@pytest.mark.parametrize("name", BATCH_ONLY)
def test_rules_that_need_every_update_at_once_are_not_streaming(name: str) -> None:
    assert not isinstance(strategy(name), Streaming)


def _fold_peak(n: int, size: int) -> int:
    """Peak traced memory of folding ``n`` updates of ``size`` float32 values, each produced,
    added and dropped in turn (as they arrive over the network)."""
    glob = {"w": np.zeros(size, np.float32)}
    tracemalloc.start()
    tracemalloc.reset_peak()
    try:
        fold = strategy("fedavg").begin(glob, 1)
        for i in range(n):
            fold.add(Update(f"t{i:03d}", {"w": np.full(size, float(i), np.float32)}, 1 + i))
        result = fold.result()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert float(result["w"][0]) == pytest.approx(
        sum(i * (1 + i) for i in range(n)) / sum(range(1, n + 1))
    )
    return peak


def test_folding_memory_does_not_grow_with_the_number_of_updates() -> None:
    size = 1_000_000  # 4 MB per model
    few, many = _fold_peak(3, size), _fold_peak(30, size)
    model_bytes = 4 * size
    assert many <= 2.5 * model_bytes  # the running sum and the update in hand (+ blocks)
    assert many <= few + model_bytes // 10
