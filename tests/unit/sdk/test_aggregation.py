"""Server-side aggregation rules: properties every rule has, and each rule's own behaviour."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flame.aggregation import (
    FedBuff,
    Scaffold,
    Strategy,
    Update,
    make_strategy,
    pack_extras,
    split_extras,
    strategy_names,
)
from flame.aggregation.kernels import BLOCK, weighted_sum
from flame.config import OptimizerSpec
from flame.errors import AggregationError, RejectedUpdate
from flame_spec import SpecError, parse_job_spec

SHAPES = {"layer.weight": (3, 2), "layer.bias": (2,)}
ALL_RULES = [
    "fedavg",
    "fedprox",
    "fednova",
    "fedadam",
    "fedyogi",
    "fedadagrad",
    "fedbuff",
    "scaffold",
    "trimmed_mean",
    "phocas",
    "median",
    "krum",
    "multi_krum",
]


def model(rng: np.random.Generator, scale: float = 1.0) -> dict[str, np.ndarray]:
    return {k: (rng.standard_normal(s) * scale).astype(np.float32) for k, s in SHAPES.items()}


def zeros_like(w: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: np.zeros_like(v) for k, v in w.items()}


def updates_from(
    models: list[dict[str, np.ndarray]], samples: list[int] | None = None
) -> list[Update]:
    samples = samples or [10] * len(models)
    return [
        Update(
            sender=f"trainer-{i:02d}",
            weights=m,
            num_samples=n,
            extras=zeros_like(m),  # SCAFFOLD's control delta; ignored by the other rules
        )
        for i, (m, n) in enumerate(zip(models, samples, strict=True))
    ]


def strategy(name: str, n: int) -> Strategy:
    """A rule configured so that one aggregate() call over ``n`` updates produces a model."""
    kwargs: dict[str, object] = {}
    if name == "fedbuff":
        kwargs = {"k": n}
    if name in ("krum", "multi_krum"):
        kwargs = {"f": max(0, (n - 3) // 2)}
    return make_strategy(OptimizerSpec(name=name, kwargs=kwargs))


def test_every_documented_rule_is_registered() -> None:
    assert sorted(ALL_RULES) == strategy_names()


def test_fedavg_weights_by_samples() -> None:
    g = {"w": np.zeros(3, np.float32)}
    ups = [
        Update("a", {"w": np.ones(3, np.float32)}, num_samples=1),
        Update("b", {"w": np.full(3, 4.0, np.float32)}, num_samples=3),
    ]
    out = make_strategy(OptimizerSpec(name="fedavg")).aggregate(g, ups, 0)
    np.testing.assert_allclose(out["w"], [3.25, 3.25, 3.25], rtol=1e-6)
    assert out["w"].dtype == np.float32


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    samples=st.lists(st.integers(0, 1000), min_size=1, max_size=8).filter(lambda s: sum(s) > 0),
)
def test_fedavg_matches_the_weighted_average(seed: int, samples: list[int]) -> None:
    rng = np.random.default_rng(seed)
    models = [model(rng, 10.0) for _ in samples]
    out = make_strategy(OptimizerSpec()).aggregate(model(rng), updates_from(models, samples), 0)
    for name in SHAPES:
        expected = np.average(
            np.stack([m[name].astype(np.float64) for m in models]), axis=0, weights=samples
        )
        np.testing.assert_allclose(out[name], expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("name", ALL_RULES)
@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(3, 8), data=st.data())
def test_every_rule_ignores_arrival_order(
    name: str, seed: int, n: int, data: st.DataObject
) -> None:
    rng = np.random.default_rng(seed)
    g = model(rng)
    ups = updates_from([model(rng) for _ in range(n)], [int(x) for x in rng.integers(1, 50, n)])
    shuffled = data.draw(st.permutations(ups))
    a = strategy(name, n).aggregate(g, ups, 0)
    b = strategy(name, n).aggregate(g, shuffled, 0)
    for k in SHAPES:
        np.testing.assert_array_equal(a[k], b[k])  # bit-identical, not just close


AVERAGING = [r for r in ALL_RULES if r not in ("fedadam", "fedyogi", "fedadagrad")]


@pytest.mark.parametrize("name", AVERAGING)
@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(3, 8))
def test_the_mean_of_identical_models_is_that_model(name: str, seed: int, n: int) -> None:
    rng = np.random.default_rng(seed)
    g, m = model(rng), model(rng, 100.0)
    out = strategy(name, n).aggregate(g, updates_from([m] * n), 0)
    for k in SHAPES:
        np.testing.assert_allclose(out[k], m[k], rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("name", ALL_RULES)
@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(3, 6))
def test_updates_equal_to_the_global_model_leave_it_unchanged(name: str, seed: int, n: int) -> None:
    # For the adaptive optimizers this is the form "mean of identical models" takes: a zero
    # pseudo-gradient on the first round moves nothing.
    g = model(np.random.default_rng(seed), 10.0)
    out = strategy(name, n).aggregate(g, updates_from([g] * n), 0)
    for k in SHAPES:
        np.testing.assert_allclose(out[k], g[k], rtol=1e-6, atol=1e-6)


def _with_outliers(
    rng: np.random.Generator, honest: int, f: int, magnitude: float
) -> tuple[list[Update], np.ndarray, np.ndarray, dict[str, tuple[np.ndarray, np.ndarray]]]:
    good = [model(rng) for _ in range(honest)]
    bad = []
    for _ in range(f):
        m = model(rng)
        bad.append(
            {
                k: (
                    v + rng.choice([-1.0, 1.0], v.shape) * magnitude * rng.uniform(1, 10, v.shape)
                ).astype(np.float32)
                for k, v in m.items()
            }
        )
    ups = updates_from(good + bad, [1] * honest + [10**6] * f)  # outliers also lie about samples
    bounds = {
        k: (np.min([m[k] for m in good], axis=0), np.max([m[k] for m in good], axis=0))
        for k in SHAPES
    }
    return ups, np.array([]), np.array([]), bounds


def _assert_within(
    out: dict[str, np.ndarray], bounds: dict[str, tuple[np.ndarray, np.ndarray]]
) -> None:
    for k, (lo, hi) in bounds.items():
        slack = 1e-6 * (1 + np.abs(lo) + np.abs(hi))
        assert np.all(out[k] >= lo - slack), (k, out[k], lo)
        assert np.all(out[k] <= hi + slack), (k, out[k], hi)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    honest=st.integers(1, 8),
    f=st.integers(0, 7),
    magnitude=st.sampled_from([1.5, 1e3, 1e30]),
)
def test_median_stays_within_the_honest_range(
    seed: int, honest: int, f: int, magnitude: float
) -> None:
    f = min(f, honest - 1)  # f < n / 2
    ups, _, _, bounds = _with_outliers(np.random.default_rng(seed), honest, f, magnitude)
    g = model(np.random.default_rng(seed + 1))
    _assert_within(make_strategy(OptimizerSpec(name="median")).aggregate(g, ups, 0), bounds)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    honest=st.integers(1, 8),
    f=st.integers(0, 4),
    magnitude=st.sampled_from([1.5, 1e3, 1e30]),
)
def test_trimmed_mean_stays_within_the_honest_range(
    seed: int, honest: int, f: int, magnitude: float
) -> None:
    n = honest + f
    beta = min(0.49, (f + 0.5) / n)  # trims at least f from each end
    if n - 2 * int(beta * n) < 1 or int(beta * n) < f:
        return
    ups, _, _, bounds = _with_outliers(np.random.default_rng(seed), honest, f, magnitude)
    g = model(np.random.default_rng(seed + 1))
    spec = OptimizerSpec(name="trimmed_mean", kwargs={"beta": beta})
    _assert_within(make_strategy(spec).aggregate(g, ups, 0), bounds)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    honest=st.integers(1, 8),
    f=st.integers(0, 4),
    magnitude=st.sampled_from([1.5, 1e3, 1e30]),
)
def test_phocas_stays_near_the_honest_values_and_drops_far_outliers_exactly(
    seed: int, honest: int, f: int, magnitude: float
) -> None:
    n = honest + f
    beta = min(0.49, (f + 0.5) / n)
    cut = int(beta * n)
    if n - 2 * cut < 1 or cut < f:
        return
    ups, _, _, bounds = _with_outliers(np.random.default_rng(seed), honest, f, magnitude)
    g = model(np.random.default_rng(seed + 1))
    out = make_strategy(OptimizerSpec(name="phocas", kwargs={"beta": beta})).aggregate(g, ups, 0)
    _assert_within(out, {k: (lo - (hi - lo), hi + (hi - lo)) for k, (lo, hi) in bounds.items()})
    if cut == f and magnitude >= 1e3:  # far outliers are exactly the values dropped
        honest_mean = {k: np.mean([u.weights[k] for u in ups[:honest]], axis=0) for k in SHAPES}
        for k in SHAPES:
            np.testing.assert_allclose(out[k], honest_mean[k], rtol=1e-5, atol=1e-6)


def test_phocas_drops_one_sided_outliers_where_trimmed_mean_drops_honest_values_too() -> None:
    g = {"w": np.zeros(1, np.float32)}
    vals = [-100, -90, 1, 2, 3, 4, 5, 6, 7, 8]  # two attackers below eight honest values
    ups = [Update(f"t{i}", {"w": np.array([v], np.float32)}, 1) for i, v in enumerate(vals)]

    def agg(name: str) -> float:
        spec = OptimizerSpec(name=name, kwargs={"beta": 0.2})
        return float(make_strategy(spec).aggregate(g, ups, 0)["w"][0])

    assert agg("trimmed_mean") == pytest.approx(3.5)  # 1..6: the honest 7 and 8 are cut as well
    assert agg("phocas") == pytest.approx(4.5)  # 1..8: the honest mean


@pytest.mark.parametrize("name", ["krum", "multi_krum"])
@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    f=st.integers(0, 3),
    extra=st.integers(0, 3),
    magnitude=st.sampled_from([1e2, 1e6, 1e30]),
)
def test_krum_keeps_far_outliers_out(
    name: str, seed: int, f: int, extra: int, magnitude: float
) -> None:
    honest = f + 3 + extra  # n = honest + f >= 2f + 3
    ups, _, _, bounds = _with_outliers(np.random.default_rng(seed), honest, f, magnitude)
    g = model(np.random.default_rng(seed + 1))
    strat = make_strategy(OptimizerSpec(name=name, kwargs={"f": f}))
    _assert_within(strat.aggregate(g, ups, 0), bounds)
    assert all(not s.startswith("trainer-") or int(s[-2:]) < honest for s in strat.last_chosen)  # type: ignore[attr-defined]


def test_multi_krum_averages_the_m_best_unweighted() -> None:
    g = {"w": np.zeros(2, np.float32)}
    pts = [[0, 0], [0.1, 0], [0, 0.1], [0.1, 0.1], [50, 50]]
    ups = [
        Update(f"t{i}", {"w": np.array(p, np.float32)}, num_samples=i + 1)
        for i, p in enumerate(pts)
    ]
    strat = make_strategy(OptimizerSpec(name="multi_krum", kwargs={"f": 1, "m": 4}))
    out = strat.aggregate(g, ups, 0)
    np.testing.assert_allclose(out["w"], [0.05, 0.05], rtol=1e-6)
    assert strat.last_chosen == ["t0", "t1", "t2", "t3"]  # type: ignore[attr-defined]


def test_krum_needs_2f_plus_3_updates() -> None:
    g = {"w": np.zeros(2, np.float32)}
    ups = [Update(f"t{i}", {"w": np.full(2, i, np.float32)}, 1) for i in range(4)]
    with pytest.raises(AggregationError, match="2f \\+ 3"):
        make_strategy(OptimizerSpec(name="krum", kwargs={"f": 1})).aggregate(g, ups, 0)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 9))
def test_median_is_numpys_coordinate_median(seed: int, n: int) -> None:
    rng = np.random.default_rng(seed)
    models = [model(rng) for _ in range(n)]
    out = make_strategy(OptimizerSpec(name="median")).aggregate(model(rng), updates_from(models), 0)
    for k in SHAPES:
        np.testing.assert_allclose(out[k], np.median([m[k] for m in models], axis=0), rtol=1e-6)


def test_trimmed_mean_drops_the_extremes_per_coordinate() -> None:
    g = {"w": np.zeros(2, np.float32)}
    vals = [[1, 100], [2, -100], [3, 5], [4, 6], [1000, 7]]
    ups = [Update(f"t{i}", {"w": np.array(v, np.float32)}, 1) for i, v in enumerate(vals)]
    out = make_strategy(OptimizerSpec(name="trimmed_mean", kwargs={"beta": 0.2})).aggregate(
        g, ups, 0
    )
    np.testing.assert_allclose(out["w"], [3.0, 6.0])


# --- adaptive optimizers against a literal float64 transcription of the paper ----------------


def _reference(
    name: str,
    rounds: list[list[dict[str, np.ndarray]]],
    x0: dict[str, np.ndarray],
    eta: float,
    beta1: float,
    beta2: float,
    tau: float,
) -> list[dict[str, np.ndarray]]:
    x = {k: v.astype(np.float64) for k, v in x0.items()}
    m = {k: np.zeros_like(v) for k, v in x.items()}
    v = {k: np.full_like(a, tau**2) for k, a in x.items()}
    out = []
    for models in rounds:
        for k in x:
            delta = np.mean([mm[k].astype(np.float64) for mm in models], axis=0) - x[k]
            m[k] = beta1 * m[k] + (1 - beta1) * delta
            if name == "fedadagrad":
                v[k] = v[k] + delta**2
            elif name == "fedadam":
                v[k] = beta2 * v[k] + (1 - beta2) * delta**2
            else:
                v[k] = v[k] - (1 - beta2) * delta**2 * np.sign(v[k] - delta**2)
            x[k] = x[k] + eta * m[k] / (np.sqrt(v[k]) + tau)
        out.append({k: a.copy() for k, a in x.items()})
    return out


@pytest.mark.parametrize("name", ["fedadam", "fedyogi", "fedadagrad"])
def test_adaptive_optimizers_follow_reddi_et_al(name: str) -> None:
    rng = np.random.default_rng(7)
    eta, beta1, beta2, tau = 0.05, 0.8, 0.95, 1e-2
    kwargs = {"eta": eta, "beta1": beta1, "tau": tau}
    if name != "fedadagrad":
        kwargs["beta2"] = beta2
    strat = make_strategy(OptimizerSpec(name=name, kwargs=kwargs))
    x = model(rng)
    rounds = [[model(rng) for _ in range(4)] for _ in range(6)]
    expected = _reference(name, rounds, x, eta, beta1, beta2, tau)
    for rnd, models in enumerate(rounds):
        x = strat.aggregate(x, updates_from(models), rnd)  # equal samples: plain mean
        for k in SHAPES:
            np.testing.assert_allclose(x[k], expected[rnd][k], rtol=1e-4, atol=1e-5)


def test_fedyogi_and_fedadam_differ() -> None:
    rng = np.random.default_rng(3)
    x = model(rng)
    rounds = [[model(rng) for _ in range(3)] for _ in range(4)]
    adam, yogi = (
        make_strategy(OptimizerSpec(name="fedadam")),
        make_strategy(OptimizerSpec(name="fedyogi")),
    )
    xa, xy = x, x
    for rnd, models in enumerate(rounds):
        xa = adam.aggregate(xa, updates_from(models), rnd)
        xy = yogi.aggregate(xy, updates_from(models), rnd)
    assert not np.allclose(xa["layer.weight"], xy["layer.weight"])


def test_fedadagrad_rejects_beta2() -> None:
    with pytest.raises(ValueError, match="beta2"):
        make_strategy(OptimizerSpec(name="fedadagrad", kwargs={"beta2": 0.9}))


# --- FedBuff -----------------------------------------------------------------------------------


def test_fedbuff_discounts_stale_deltas_and_flushes_at_k() -> None:
    buff = make_strategy(OptimizerSpec(name="fedbuff", kwargs={"k": 3, "server_lr": 0.5}))
    assert isinstance(buff, FedBuff)
    x0 = {"w": np.zeros(2, np.float32)}
    x1 = {"w": np.ones(2, np.float32)}
    # Round 0's model was x0; round 1's model is x1 (trainers may have started from either).
    assert (
        buff.add(Update("a", {"w": np.full(2, 4.0, np.float32)}, 1, base_round=0), x0, 0) is False
    )
    assert (
        buff.add(Update("b", {"w": np.full(2, 3.0, np.float32)}, 1, base_round=1), x1, 1) is False
    )
    assert buff.add(Update("c", {"w": np.full(2, 3.0, np.float32)}, 1, base_round=0), x1, 1) is True
    out = buff.flush(x1, 1)
    # deltas: a: 4-0 with staleness 0 (added at round 0); b: 3-1, staleness 0; c: 3-0, staleness 1
    expected = 1.0 + 0.5 * (4.0 + 2.0 + 3.0 / np.sqrt(2.0)) / 3
    np.testing.assert_allclose(out["w"], [expected, expected], rtol=1e-6)
    assert buff.count == 0 and not buff.ready


def test_fedbuff_aggregate_returns_the_same_model_until_k_are_buffered() -> None:
    buff = make_strategy(OptimizerSpec(name="fedbuff", kwargs={"k": 3}))
    g = {"w": np.zeros(2, np.float32)}
    one = [Update("a", {"w": np.ones(2, np.float32)}, 1)]
    assert buff.aggregate(g, one, 0) is g
    out = buff.aggregate(
        g,
        [
            Update("b", {"w": np.ones(2, np.float32)}, 1),
            Update("c", {"w": np.ones(2, np.float32)}, 1),
        ],
        0,
    )
    assert out is not g
    np.testing.assert_allclose(out["w"], [1.0, 1.0])


def test_fedbuff_rejects_too_stale_and_future_updates() -> None:
    buff = make_strategy(OptimizerSpec(name="fedbuff", kwargs={"k": 5, "max_staleness": 2}))
    assert isinstance(buff, FedBuff)
    g = {"w": np.zeros(2, np.float32)}
    for rnd in range(4):
        buff.add(Update(f"t{rnd}", {"w": np.ones(2, np.float32)}, 1, base_round=rnd), g, rnd)
    with pytest.raises(RejectedUpdate, match="stale") as info:
        buff.add(Update("old", {"w": np.ones(2, np.float32)}, 1, base_round=1), g, 4)
    assert info.value.sender == "old"
    with pytest.raises(RejectedUpdate, match="ahead"):
        buff.add(Update("future", {"w": np.ones(2, np.float32)}, 1, base_round=9), g, 4)
    assert buff.count == 4  # rejected updates changed nothing


def test_fedbuff_flush_with_nothing_buffered_is_an_error() -> None:
    buff = make_strategy(OptimizerSpec(name="fedbuff"))
    assert isinstance(buff, FedBuff)
    with pytest.raises(AggregationError):
        buff.flush({"w": np.zeros(1, np.float32)}, 0)


# --- SCAFFOLD ----------------------------------------------------------------------------------


def test_scaffold_moves_x_and_c_as_in_the_paper() -> None:
    sc = make_strategy(OptimizerSpec(name="scaffold", kwargs={"global_lr": 0.5, "num_clients": 4}))
    assert isinstance(sc, Scaffold)
    g = {"w": np.zeros(2, np.float32)}
    sc.init(g)
    np.testing.assert_array_equal(sc.to_trainers()["w"], [0.0, 0.0])
    ups = [
        Update(
            "a", {"w": np.array([2, 4], np.float32)}, 1, extras={"w": np.array([1, 1], np.float32)}
        ),
        Update(
            "b",
            {"w": np.array([4, 8], np.float32)},
            99,
            extras={"w": np.array([3, -1], np.float32)},
        ),
    ]
    out = sc.aggregate(g, ups, 0)
    np.testing.assert_allclose(out["w"], [1.5, 3.0])  # 0.5 * unweighted mean
    np.testing.assert_allclose(sc.to_trainers()["w"], [1.0, 0.0])  # (2/4) * mean(dc)


def test_scaffold_requires_control_deltas() -> None:
    sc = make_strategy(OptimizerSpec(name="scaffold"))
    g = {"w": np.zeros(2, np.float32)}
    with pytest.raises(AggregationError, match="extras"):
        sc.aggregate(g, [Update("a", {"w": np.ones(2, np.float32)}, 1)], 0)
    nan = {"w": np.array([np.nan, 0], np.float32)}
    with pytest.raises(AggregationError, match="not finite"):
        sc.aggregate(g, [Update("a", {"w": np.ones(2, np.float32)}, 1, extras=nan)], 0)
    assert sc.to_trainers() == {}  # nothing changed


def test_extras_pack_and_split_round_trip() -> None:
    w = {"w": np.ones(2, np.float32)}
    c = {"w": np.zeros(2, np.float32)}
    packed = pack_extras(w, c)
    assert set(packed) == {"w", "extra/w"}
    back_w, back_c = split_extras(packed)
    assert back_w.keys() == w.keys() and back_c.keys() == c.keys()


# --- errors and edge cases ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL_RULES)
def test_no_updates_is_an_error(name: str) -> None:
    with pytest.raises(AggregationError, match="no updates"):
        strategy(name, 3).aggregate({"w": np.zeros(2, np.float32)}, [], 0)


@pytest.mark.parametrize("name", ALL_RULES)
def test_mismatched_tensors_are_an_error_and_change_nothing(name: str) -> None:
    rng = np.random.default_rng(0)
    g = model(rng)
    ups = updates_from([model(rng) for _ in range(3)])
    bad = Update(
        "trainer-99",
        {"layer.weight": np.zeros((2, 3), np.float32), "layer.bias": np.zeros(2, np.float32)},
        1,
        extras=zeros_like(g),
    )
    strat = strategy(name, 4)
    before = strat.state()
    with pytest.raises(AggregationError, match="shape"):
        strat.aggregate(g, [*ups, bad], 0)
    missing = Update("trainer-98", {"layer.bias": np.zeros(2, np.float32)}, 1, extras=zeros_like(g))
    with pytest.raises(AggregationError, match="missing"):
        strat.aggregate(g, [*ups, missing], 0)
    after = strat.state()
    assert before.data == after.data and before.tensors.keys() == after.tensors.keys()


def test_duplicate_senders_and_bad_sample_counts_are_errors() -> None:
    g = {"w": np.zeros(1, np.float32)}
    fedavg = make_strategy(OptimizerSpec())
    one = {"w": np.ones(1, np.float32)}
    with pytest.raises(AggregationError, match="two updates"):
        fedavg.aggregate(g, [Update("a", one, 1), Update("a", one, 1)], 0)
    with pytest.raises(AggregationError, match="negative"):
        fedavg.aggregate(g, [Update("a", one, -1)], 0)
    with pytest.raises(AggregationError, match="0 samples"):
        fedavg.aggregate(g, [Update("a", one, 0), Update("b", one, 0)], 0)


@pytest.mark.parametrize(
    ("name", "kwargs", "field"),
    [
        ("fedadam", {"eta": -1}, "eta"),
        ("fedyogi", {"beta1": 1.0}, "beta1"),
        ("fedbuff", {"k": 0}, "k"),
        ("trimmed_mean", {"beta": 0.5}, "beta"),
        ("krum", {"f": -1}, "f"),
        ("fedavg", {"lr": 1}, "lr"),
        ("scaffold", {"global_lr": "fast"}, "global_lr"),
    ],
)
def test_bad_kwargs_are_refused_by_the_job_spec_naming_the_field(
    name: str, kwargs: dict, field: str
) -> None:
    with pytest.raises(SpecError) as info:
        parse_job_spec({"optimizer": {"name": name, "kwargs": kwargs}})
    assert info.value.fields == [f"optimizer.kwargs.{field}"]


def test_unknown_rule_lists_the_known_ones() -> None:
    with pytest.raises(SpecError, match="fedavg"):
        parse_job_spec({"optimizer": {"name": "fedsgd-magic"}})


def test_every_rule_the_spec_accepts_is_implemented() -> None:
    from flame.aggregation.registry import IMPLEMENTATIONS
    from flame.selection import IMPLEMENTATIONS as SELECTORS
    from flame_spec.rules import RULES
    from flame_spec.rules import SELECTORS as SPEC_SELECTORS

    assert set(IMPLEMENTATIONS) == set(RULES)
    assert set(SELECTORS) == set(SPEC_SELECTORS)


def test_integer_tensors_are_averaged_and_rounded() -> None:
    g = {"w": np.zeros(2, np.float32), "steps": np.array(0, np.int64)}
    ups = [
        Update("a", {"w": np.ones(2, np.float32), "steps": np.array(10, np.int64)}, 1),
        Update("b", {"w": np.ones(2, np.float32), "steps": np.array(13, np.int64)}, 1),
    ]
    out = make_strategy(OptimizerSpec()).aggregate(g, ups, 0)
    assert out["steps"].dtype == np.int64 and int(out["steps"]) == 12


@pytest.mark.parametrize("name", ["fedavg", "scaffold", "median", "trimmed_mean", "multi_krum"])
def test_results_keep_the_global_models_dtype(name: str) -> None:
    g = {"w": np.zeros(3, np.float32)}
    ups = [
        Update(f"t{i}", {"w": np.full(3, i, np.float64)}, 1, extras={"w": np.zeros(3)})
        for i in range(5)
    ]
    out = make_strategy(OptimizerSpec(name=name)).aggregate(g, ups, 0)
    assert out["w"].dtype == np.float32


def test_blocked_kernels_match_numpy_on_large_tensors() -> None:
    rng = np.random.default_rng(1)
    size = 2 * BLOCK + 17
    arrays = [rng.standard_normal(size).astype(np.float32) for _ in range(5)]
    coeffs = rng.random(5)
    expected = np.tensordot(coeffs, np.stack(arrays).astype(np.float64), axes=1)
    np.testing.assert_allclose(weighted_sum(arrays, coeffs), expected, rtol=1e-5, atol=1e-5)
    g = {"w": np.zeros(size, np.float32)}
    ups = [Update(f"t{i}", {"w": a}, 1) for i, a in enumerate(arrays)]
    med = make_strategy(OptimizerSpec(name="median")).aggregate(g, ups, 0)
    np.testing.assert_array_equal(med["w"], np.median(np.stack(arrays), axis=0))


# --- 0-d tensors and non-finite values (issue 17) ------------------------------------------------


def _scalar(value: float) -> np.ndarray:
    return np.array(value, np.float32)


@pytest.mark.parametrize("name", ["fedadam", "fedyogi", "fedadagrad"])
def test_adaptive_rules_step_a_0d_tensor(name: str) -> None:
    g = {"s": _scalar(0.0), "w": np.zeros(2, np.float32)}
    ups = [
        Update(f"t{i}", {"s": _scalar(v), "w": np.full(2, v, np.float32)}, 1)
        for i, v in enumerate([1.0, 3.0])
    ]
    out = make_strategy(OptimizerSpec(name=name)).aggregate(g, ups, 0)
    assert (
        isinstance(out["s"], np.ndarray) and out["s"].shape == () and out["s"].dtype == np.float32
    )
    assert float(out["s"]) == pytest.approx(
        float(out["w"][0])
    )  # a scalar moves like any coordinate
    assert float(out["s"]) > 0


def test_fedbuff_sums_every_buffered_delta_of_a_0d_tensor() -> None:
    g = {"s": _scalar(0.0)}
    ups = [Update("a", {"s": _scalar(1.0)}, 1), Update("b", {"s": _scalar(3.0)}, 1)]
    out = make_strategy(OptimizerSpec(name="fedbuff", kwargs={"k": 2})).aggregate(g, ups, 0)
    assert float(out["s"]) == 2.0  # not 0.5: the second delta was dropped
    assert isinstance(out["s"], np.ndarray) and out["s"].shape == ()


def test_scaffold_returns_a_0d_ndarray_for_a_0d_tensor() -> None:
    g = {"s": _scalar(0.0)}
    ups = [
        Update(s, {"s": _scalar(v)}, 1, extras={"s": _scalar(0.0)})
        for s, v in (("a", 1.0), ("b", 3.0))
    ]
    out = make_strategy(OptimizerSpec(name="scaffold")).aggregate(g, ups, 0)
    assert type(out["s"]) is np.ndarray and out["s"].shape == () and out["s"].dtype == np.float32
    assert float(out["s"]) == 2.0


@pytest.mark.parametrize("name", ["trimmed_mean", "phocas", "median"])
def test_robust_rules_treat_a_nan_as_missing(name: str) -> None:
    # One NaN among five values: every coordinate-wise robust rule aggregates the four finite
    # ones (phocas used to return NaN here while trimmed mean dropped it).
    g = {"w": np.zeros(1, np.float32)}
    vals = [1.0, 2.0, np.nan, 3.0, 4.0]
    ups = [Update(f"t{i}", {"w": np.array([v], np.float32)}, 1) for i, v in enumerate(vals)]
    spec = OptimizerSpec(name=name, kwargs={} if name == "median" else {"beta": 0.2})
    out = make_strategy(spec).aggregate(g, ups, 0)
    assert float(out["w"][0]) == pytest.approx(2.5)  # every rule: the middle of 1, 2, 3, 4


def test_phocas_averages_the_nearest_values_when_two_windows_reach_equally_far() -> None:
    # Found by the shape suite. Sorted values with trimmed mean -1/3 (beta=0.3 cuts 2 per end):
    # the 5 nearest are -3, -2, 0, 1, 2 (mean -0.4). The windows [-3, -3, -2, 0, 1] and
    # [-3, -2, 0, 1, 2] both reach 8/3 from the centre, and taking the lower one averaged a -3
    # (8/3 away) instead of the 2 (7/3 away): -1.4.
    g = {"w": np.zeros(1, np.float32)}
    vals = [-3, -3, -2, 0, 1, 2, 3]
    ups = [Update(f"t{i}", {"w": np.array([v], np.float32)}, 1) for i, v in enumerate(vals)]
    out = make_strategy(OptimizerSpec(name="phocas", kwargs={"beta": 0.3})).aggregate(g, ups, 0)
    assert float(out["w"][0]) == pytest.approx(-0.4)
