"""Every rule, every shape, every dtype: properties against plain reference implementations.

Each rule is run on models of random tensors (0-d, 1-d, n-d, with size-0 dimensions) in every
dtype the wire carries, and its result is compared with a float64 reference written here with
loops and ``np.mean``/``np.median``, straight from the rule's definition. Integer and bool
results must be the reference rounded half to even and clipped to the dtype's range (a bool is
a majority vote); robust rules must treat non-finite values as missing. Every result must have
the global model's shapes and dtypes exactly and be bit-identical for shuffled updates.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes

from flame.aggregation import Scaffold, Strategy, Update, make_strategy, strategy_names
from flame.aggregation.kernels import compute_dtype
from flame.config import OptimizerSpec
from flame.tensors import WIRE_DTYPES

Model = dict[str, np.ndarray]
DTYPES = sorted(WIRE_DTYPES.values(), key=str)
FLOATS = [dt for dt in DTYPES if dt.kind == "f"]
#: The rules this suite checks (a new rule fails test_every_rule_has_a_reference_here).
COVERED = [
    "fedavg", "fedprox", "fednova", "fedadam", "fedyogi", "fedadagrad", "fedbuff", "scaffold",
    "trimmed_mean", "phocas", "median", "krum", "multi_krum",
]  # fmt: skip
#: Relative precision a float result is checked to (float16 results are rounded to float16).
TOLERANCE = {np.dtype(np.float16): 4e-3, np.dtype(np.float32): 2e-5, np.dtype(np.float64): 1e-9}
FAST = settings(max_examples=40, deadline=None)


# --- generated rounds --------------------------------------------------------------------------


@dataclass(frozen=True)
class Round:
    global_weights: Model
    updates: list[Update]

    @property
    def n(self) -> int:
        return len(self.updates)


def _values(
    rng: np.random.Generator, dtype: np.dtype, shape: tuple[int, ...], style: str
) -> np.ndarray:
    return np.asarray(_draw(rng, dtype, shape, style))  # 0-d draws come back as NumPy scalars


def _draw(rng: np.random.Generator, dtype: np.dtype, shape: tuple[int, ...], style: str) -> object:
    if dtype.kind == "b":
        return rng.integers(0, 2, shape).astype(bool)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        lo, hi = max(info.min, -(2**40)), min(info.max, 2**40)  # float64 is exact below 2**53
        if style == "ties":
            lo, hi = max(lo, -3), min(hi, 3)
        return rng.integers(lo, hi, shape, endpoint=True).astype(dtype)
    if style == "ties":  # few distinct values: ties in sorts, medians and Krum scores
        return rng.integers(-3, 4, shape).astype(dtype)
    scale = 10.0 ** rng.uniform(-2, 2 if dtype.itemsize == 2 else 4)
    return (rng.standard_normal(shape) * scale).astype(dtype)


@st.composite
def rounds(draw: st.DrawFn, n_min: int = 1, n_max: int = 7, non_finite: bool = False) -> Round:
    """A global model of 1-3 tensors (random shapes and wire dtypes) and ``n`` updates of it,
    each with a sample count and a SCAFFOLD control delta (in the dtype the server keeps c in).
    With ``non_finite``, float tensors of the updates get NaN and +-inf values, sometimes in
    every update at one coordinate."""
    count = draw(st.integers(1, 3))
    specs = [
        (
            f"t{i}",
            draw(st.sampled_from(DTYPES)),
            draw(array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)),
        )
        for i in range(count)
    ]
    n = draw(st.integers(n_min, n_max))
    style = draw(st.sampled_from(["spread", "ties"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    g = {name: _values(rng, dt, shape, style) for name, dt, shape in specs}
    models = [{name: _values(rng, dt, shape, style) for name, dt, shape in specs} for _ in range(n)]
    if non_finite:
        for name, dt, shape in specs:
            if dt.kind != "f" or not math.prod(shape):
                continue
            size = math.prod(shape)
            for m in models:
                hit = (rng.random(size) < 0.2).reshape(shape)
                bad = rng.choice([np.nan, np.inf, -np.inf], size).reshape(shape)
                m[name][hit] = bad[hit]
            if draw(st.booleans()):  # one coordinate non-finite in every update
                where = tuple(int(rng.integers(0, s)) for s in shape)
                for m in models:
                    m[name][where] = np.nan
    updates = [
        Update(
            sender=f"trainer-{i}",
            weights=m,
            num_samples=int(rng.integers(1, 100)),
            extras={
                name: np.asarray(rng.standard_normal(shape)).astype(compute_dtype(dt))
                for name, dt, shape in specs
            },
        )
        for i, m in enumerate(models)
    ]
    return Round(g, updates)


def f64(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, dtype=np.float64)


# --- checking a result against a float64 reference ----------------------------------------------


def assert_matches(got: np.ndarray, ref: np.ndarray, like: np.ndarray, scale: float) -> None:
    """``got`` has ``like``'s shape and dtype and equals the float64 ``ref`` converted as the
    rules promise: floats within the dtype's precision, integers rounded half to even and
    clipped, bools a majority vote (ties False)."""
    assert type(got) is np.ndarray, type(got)  # never a NumPy scalar, 0-d included
    assert got.shape == like.shape and got.dtype == like.dtype, (got.shape, got.dtype)
    dt = like.dtype
    if dt.kind == "f":
        tol = TOLERANCE[dt]
        np.testing.assert_allclose(f64(got), ref, rtol=tol, atol=tol * scale)
        return
    if dt.kind == "b":
        want = ref > 0.5
    else:
        info = np.iinfo(dt)
        want = np.clip(np.rint(ref), info.min, info.max)
    # Where the reference sits on a rounding tie (x.5) the rule's own float64 sum may land on
    # either side of it: accept both neighbours there, and exactly the rounded value elsewhere.
    tie = np.abs(np.abs(ref - np.floor(ref)) - 0.5) < 1e-9 * (1 + np.abs(ref))
    exact = f64(got) == f64(want)
    near = np.abs(f64(got) - ref) <= 0.5 + 1e-9 * (1 + np.abs(ref))
    assert np.all(exact | (tie & near)), (got, ref)


def scale_of(r: Round, name: str) -> float:
    values = [f64(r.global_weights[name])] + [f64(u.weights[name]) for u in r.updates]
    finite = np.concatenate([v[np.isfinite(v)].ravel() for v in values])
    return 1.0 + (float(np.max(np.abs(finite))) if finite.size else 0.0)


def assert_shapes_and_dtypes(out: Model, g: Model) -> None:
    assert out.keys() == g.keys()
    for name, x in g.items():
        assert type(out[name]) is np.ndarray
        assert out[name].shape == x.shape and out[name].dtype == x.dtype, name


# --- reference implementations -----------------------------------------------------------------


def ref_weighted_mean(values: list[np.ndarray], weights: list[float]) -> np.ndarray:
    total = np.zeros(values[0].shape)
    for v, w in zip(values, weights, strict=True):
        total += w * f64(v)
    return total / sum(weights)


def ref_fedavg(r: Round, name: str) -> np.ndarray:
    return ref_weighted_mean(
        [u.weights[name] for u in r.updates], [u.num_samples for u in r.updates]
    )


def ref_adaptive(
    rule: str, r: Round, name: str, eta: float, beta1: float, beta2: float, tau: float
):
    """Reddi et al. (2021), Algorithm 2, one round from ``m = 0``, ``v = tau²`` for a float
    tensor; integer and bool tensors take the plain sample-weighted mean."""
    avg = ref_fedavg(r, name)
    x = f64(r.global_weights[name])
    if r.global_weights[name].dtype.kind != "f":
        return avg
    delta = avg - x
    m = (1 - beta1) * delta
    v = np.full(x.shape, tau**2)
    if rule == "fedadagrad":
        v = v + delta**2
    elif rule == "fedadam":
        v = beta2 * v + (1 - beta2) * delta**2
    else:
        v = v - (1 - beta2) * delta**2 * np.sign(v - delta**2)
    return x + eta * m / (np.sqrt(v) + tau)


def ref_fedbuff(r: Round, name: str, server_lr: float) -> np.ndarray:
    x = f64(r.global_weights[name])
    deltas = [f64(u.weights[name]) - x for u in r.updates]  # all fresh: staleness weight 1
    return x + server_lr * sum(deltas) / len(deltas)


def ref_scaffold(r: Round, name: str, global_lr: float) -> np.ndarray:
    x = f64(r.global_weights[name])
    mean_y = np.mean([f64(u.weights[name]) for u in r.updates], axis=0)
    return x + global_lr * (mean_y - x)


def _per_coordinate(r: Round, name: str, reduce: Callable[[np.ndarray], float]) -> np.ndarray:
    """``reduce`` over each coordinate's finite values (sorted); the global value if none."""
    g = f64(r.global_weights[name])
    stacked = np.stack([f64(u.weights[name]) for u in r.updates])
    out = np.empty(g.shape)
    for idx in np.ndindex(*g.shape):
        column = stacked[(slice(None), *idx)]
        finite = np.sort(column[np.isfinite(column)])
        out[idx] = reduce(finite) if finite.size else g[idx]
    return out


def trimmed(values: np.ndarray, beta: float) -> float:
    cut = math.floor(beta * len(values))
    return float(np.mean(values[cut : len(values) - cut]))


def phocas_candidates(values: np.ndarray, beta: float) -> list[float]:
    """The means of every choice of the ``m - floor(beta m)`` values nearest the trimmed mean
    (several when values tie for the last places)."""
    m = len(values)
    k = m - math.floor(beta * m)
    centre = trimmed(values, beta)
    dist = np.abs(values - centre)
    kth = np.sort(dist)[k - 1]
    close = 1e-6 * (1 + abs(centre) + kth)
    sure = values[dist < kth - close]
    tied = values[np.abs(dist - kth) <= close]
    need = k - len(sure)
    return [
        float(np.mean(np.concatenate([sure, np.array(pick)])))
        for pick in itertools.combinations(tied, need)
    ]


def ref_phocas(out: np.ndarray, r: Round, name: str, beta: float) -> np.ndarray:
    """Per coordinate, phocas of the finite values (the global value if none); where ties make
    "the values nearest" ambiguous, the candidate nearest the rule's own result ``out``."""
    got = f64(out)

    def reduce_at(idx: tuple[int, ...]) -> Callable[[np.ndarray], float]:
        def reduce(values: np.ndarray) -> float:
            return min(phocas_candidates(values, beta), key=lambda v: abs(v - got[idx]))

        return reduce

    g = f64(r.global_weights[name])
    stacked = np.stack([f64(u.weights[name]) for u in r.updates])
    ref = np.empty(g.shape)
    for idx in np.ndindex(*g.shape):
        column = stacked[(slice(None), *idx)]
        finite = np.sort(column[np.isfinite(column)])
        ref[idx] = reduce_at(idx)(finite) if finite.size else g[idx]
    return ref


def ref_krum_scores(r: Round, f: int) -> tuple[np.ndarray, np.ndarray]:
    """``(broken, scores)``: which models have a non-finite value, and each model's sum of
    squared distances to its ``n - f - 2`` nearest others (a broken model is infinitely far)."""
    n = r.n
    flat = [
        np.concatenate([f64(u.weights[k]).ravel() for k in r.global_weights]) for u in r.updates
    ]
    broken = np.array([not np.all(np.isfinite(v)) for v in flat])
    dist = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            if i != j:
                dist[i, j] = (
                    np.inf if broken[i] or broken[j] else float(np.sum((flat[i] - flat[j]) ** 2))
                )
    scores = np.array([np.sort(np.delete(dist[i], i))[: n - f - 2].sum() for i in range(n)])
    return broken, scores


def assert_krum(strat: Strategy, out: Model, r: Round, f: int, m: int | None) -> None:
    broken, scores = ref_krum_scores(r, f)
    chosen = [int(s.split("-")[1]) for s in strat.last_chosen]  # type: ignore[attr-defined]
    assert len(chosen) == min(m or r.n - f, r.n - f)
    rest = [i for i in range(r.n) if i not in chosen]
    spread = 1e-6 * (1 + np.max(np.abs(scores[np.isfinite(scores)]), initial=0.0))
    for i in chosen:  # the chosen rank first: finite models before broken ones, then by score
        for j in rest:
            assert (broken[i], scores[i]) <= (broken[j], scores[j] + spread), (i, j, scores)
    picked = Round(r.global_weights, [r.updates[i] for i in chosen])
    for name, x in r.global_weights.items():
        ref = _per_coordinate(picked, name, lambda v: float(np.mean(v)))
        assert_matches(out[name], ref, x, scale_of(r, name))


# --- the properties ----------------------------------------------------------------------------


def test_every_rule_has_a_reference_here() -> None:
    assert sorted(COVERED) == strategy_names()


def run(rule: str, r: Round, kwargs: dict[str, object], updates: list[Update] | None = None):
    strat = make_strategy(OptimizerSpec(name=rule, kwargs=kwargs))
    return strat, strat.aggregate(r.global_weights, r.updates if updates is None else updates, 0)


def assert_order_independent(
    rule: str, r: Round, kwargs: dict[str, object], out: Model, data: st.DataObject
) -> None:
    shuffled = data.draw(st.permutations(r.updates))
    _, again = run(rule, r, kwargs, shuffled)
    for name in out:
        assert again[name].dtype == out[name].dtype
        np.testing.assert_array_equal(again[name], out[name])  # bit-identical (NaN == NaN)


@pytest.mark.parametrize("rule", ["fedavg", "fedprox"])
@FAST
@given(r=rounds(), data=st.data())
def test_fedavg_is_the_sample_weighted_mean(rule: str, r: Round, data: st.DataObject) -> None:
    _, out = run(rule, r, {})
    assert_shapes_and_dtypes(out, r.global_weights)
    for name, x in r.global_weights.items():
        assert_matches(out[name], ref_fedavg(r, name), x, scale_of(r, name))
    assert_order_independent(rule, r, {}, out, data)


@pytest.mark.parametrize("rule", ["fedadam", "fedyogi", "fedadagrad"])
@FAST
@given(r=rounds(), data=st.data())
def test_adaptive_rules_follow_reddi_et_al_on_every_shape(
    rule: str, r: Round, data: st.DataObject
) -> None:
    eta, beta1, beta2, tau = 0.3, 0.8, 0.95, 1e-2
    kwargs: dict[str, object] = {"eta": eta, "beta1": beta1, "tau": tau}
    if rule != "fedadagrad":
        kwargs["beta2"] = beta2
    strat, out = run(rule, r, kwargs)
    assert_shapes_and_dtypes(out, r.global_weights)
    for name, x in r.global_weights.items():
        ref = ref_adaptive(rule, r, name, eta, beta1, beta2, tau)
        assert_matches(out[name], ref, x, scale_of(r, name))
    state = strat.state().tensors  # moments for the float tensors only, shaped like them
    floats = {k for k, x in r.global_weights.items() if x.dtype.kind == "f"}
    assert {k.split("/", 1)[1] for k in state} == floats
    for key, moment in state.items():
        x = r.global_weights[key.split("/", 1)[1]]
        assert moment.shape == x.shape and moment.dtype == compute_dtype(x.dtype)
    assert_order_independent(rule, r, kwargs, out, data)


@FAST
@given(r=rounds(), server_lr=st.sampled_from([0.5, 1.0, 2.0]), data=st.data())
def test_fedbuff_applies_the_mean_buffered_delta(
    r: Round, server_lr: float, data: st.DataObject
) -> None:
    kwargs: dict[str, object] = {"k": r.n, "server_lr": server_lr}
    _, out = run("fedbuff", r, kwargs)
    assert_shapes_and_dtypes(out, r.global_weights)
    for name, x in r.global_weights.items():
        assert_matches(out[name], ref_fedbuff(r, name, server_lr), x, scale_of(r, name))
    assert_order_independent("fedbuff", r, kwargs, out, data)


@FAST
@given(
    r=rounds(),
    global_lr=st.sampled_from([0.5, 1.0, 2.0]),
    num_clients=st.sampled_from([None, 3, 10]),
    data=st.data(),
)
def test_scaffold_moves_x_and_c_on_every_shape(
    r: Round, global_lr: float, num_clients: int | None, data: st.DataObject
) -> None:
    kwargs: dict[str, object] = {"global_lr": global_lr, "num_clients": num_clients}
    strat, out = run("scaffold", r, kwargs)
    assert isinstance(strat, Scaffold)
    assert_shapes_and_dtypes(out, r.global_weights)
    share = min(1.0, r.n / (num_clients or r.n))
    c = strat.to_trainers()
    for name, x in r.global_weights.items():
        assert_matches(out[name], ref_scaffold(r, name, global_lr), x, scale_of(r, name))
        dc = np.mean([f64(u.extras[name]) for u in r.updates], axis=0)
        assert type(c[name]) is np.ndarray
        assert c[name].shape == x.shape and c[name].dtype == compute_dtype(x.dtype)
        tol = TOLERANCE[c[name].dtype]
        np.testing.assert_allclose(f64(c[name]), share * dc, rtol=tol, atol=tol * 10)
    assert_order_independent("scaffold", r, kwargs, out, data)


BETAS = st.sampled_from([0.0, 0.1, 0.2, 0.3, 0.45])


@FAST
@given(r=rounds(non_finite=True), beta=BETAS, data=st.data())
def test_trimmed_mean_trims_each_coordinates_finite_values(
    r: Round, beta: float, data: st.DataObject
) -> None:
    _, out = run("trimmed_mean", r, {"beta": beta})
    assert_shapes_and_dtypes(out, r.global_weights)
    for name, x in r.global_weights.items():
        ref = _per_coordinate(r, name, lambda v: trimmed(v, beta))
        assert_matches(out[name], ref, x, scale_of(r, name))
    assert_order_independent("trimmed_mean", r, {"beta": beta}, out, data)


@FAST
@given(r=rounds(non_finite=True), data=st.data())
def test_median_is_each_coordinates_finite_median(r: Round, data: st.DataObject) -> None:
    _, out = run("median", r, {})
    assert_shapes_and_dtypes(out, r.global_weights)
    for name, x in r.global_weights.items():
        ref = _per_coordinate(r, name, lambda v: float(np.median(v)))
        assert_matches(out[name], ref, x, scale_of(r, name))
    assert_order_independent("median", r, {}, out, data)


@FAST
@given(r=rounds(non_finite=True), beta=BETAS, data=st.data())
def test_phocas_averages_the_finite_values_nearest_the_trimmed_mean(
    r: Round, beta: float, data: st.DataObject
) -> None:
    _, out = run("phocas", r, {"beta": beta})
    assert_shapes_and_dtypes(out, r.global_weights)
    for name, x in r.global_weights.items():
        assert_matches(out[name], ref_phocas(out[name], r, name, beta), x, scale_of(r, name))
    assert_order_independent("phocas", r, {"beta": beta}, out, data)


@pytest.mark.parametrize("rule", ["krum", "multi_krum"])
@FAST
@given(r=rounds(n_min=3, n_max=7, non_finite=True), data=st.data())
def test_krum_picks_the_best_scored_finite_models(rule: str, r: Round, data: st.DataObject) -> None:
    f = data.draw(st.integers(0, (r.n - 3) // 2))
    m = data.draw(st.sampled_from([None, 1, 2, r.n])) if rule == "multi_krum" else 1
    kwargs: dict[str, object] = {"f": f} if rule == "krum" else {"f": f, "m": m}
    strat, out = run(rule, r, kwargs)
    assert_shapes_and_dtypes(out, r.global_weights)
    assert_krum(strat, out, r, f, m)
    assert_order_independent(rule, r, kwargs, out, data)


@pytest.mark.parametrize("rule", ["trimmed_mean", "phocas", "median", "multi_krum"])
@pytest.mark.parametrize("dtype", FLOATS, ids=str)
def test_a_coordinate_without_finite_values_keeps_the_global_value(
    rule: str, dtype: np.dtype
) -> None:
    g = {"w": np.array([1.0, 2.0], dtype)}
    values = [[np.nan, 5.0], [np.inf, 6.0], [-np.inf, 7.0]]
    ups = [Update(f"t{i}", {"w": np.array(v, dtype)}, 1) for i, v in enumerate(values)]
    _, out = run(rule, Round(g, ups), {"f": 0} if rule == "multi_krum" else {})
    assert out["w"].dtype == dtype
    np.testing.assert_array_equal(out["w"], np.array([1.0, 6.0], dtype))


@FAST
@given(r=rounds(), data=st.data())
def test_fednova_normalises_each_step_by_its_local_steps(r: Round, data: st.DataObject) -> None:
    """Wang et al. 2020 in float64: ``x - tau_eff * sum_i p_i (x - x_i) / tau_i``; integer and
    bool tensors take the sample-weighted mean."""
    steps = [data.draw(st.integers(1, 9)) for _ in r.updates]
    ups = [
        Update(u.sender, u.weights, u.num_samples, meta={"steps": float(t)})
        for u, t in zip(r.updates, steps, strict=True)
    ]
    nova = Round(r.global_weights, ups)
    _, out = run("fednova", nova, {})
    assert_shapes_and_dtypes(out, r.global_weights)
    p = np.array([u.num_samples for u in ups], dtype=np.float64)
    p /= p.sum()
    tau_eff = float(p @ np.array(steps, dtype=np.float64))
    for name, x in r.global_weights.items():
        if x.dtype.kind != "f":
            ref = ref_fedavg(nova, name)
        else:
            d = sum(pi * (f64(x) - f64(u.weights[name])) / t for pi, u, t in zip(p, ups, steps))
            ref = f64(x) - tau_eff * d
        assert_matches(out[name], ref, x, scale_of(nova, name) * max(steps))
    assert_order_independent("fednova", nova, {}, out, data)
