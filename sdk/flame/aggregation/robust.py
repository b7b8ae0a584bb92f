"""Byzantine-robust rules: coordinate-wise trimmed mean and median, Krum and multi-Krum.

They ignore ``num_samples`` on purpose: a malicious trainer could claim any sample count, so
every update counts once. All are stateless and permutation invariant.

- ``trimmed_mean(beta)`` (Yin et al. 2018): per coordinate, drop the ``floor(beta * n)``
  smallest and largest values and average the rest. With at most that many outliers the result
  stays within the range of the honest values. When the outliers all sit on one side (a
  sign-flipping attack) it also drops that many honest values from the other side, which biases
  every step towards the attackers.
- ``phocas(beta)`` (Xie, Koyejo and Gupta 2018): per coordinate, the mean of the
  ``n - floor(beta * n)`` values nearest the trimmed mean. Outliers far from the honest values are
  the ones dropped, from whichever side they sit, so the one-sided bias goes away; with at most
  ``floor(beta * n)`` outliers the result stays within the honest range widened by its width.
- ``median``: the coordinate-wise median; robust to fewer than ``n / 2`` outliers.
- ``krum(f)`` (Blanchard et al. 2017): the update whose ``n - f - 2`` nearest neighbours are
  closest (sum of squared L2 distances); needs ``n >= 2f + 3``.
- ``multi_krum(f, m)``: the unweighted mean of the ``m`` best-scored updates (``m`` defaults to,
  and is capped at, ``n - f`` so only as many updates as are surely honest are averaged).

Non-finite values (NaN, +-inf) are missing values, never part of a result. The coordinate-wise
rules aggregate each coordinate over its ``m`` finite values only (trimming ``floor(beta * m)``
from each end, so ``k`` NaN attackers leave at least ``floor(beta * n) - k`` trims for the rest);
a coordinate without a finite value keeps the global model's value. Krum and multi-Krum put a
model with a non-finite value infinitely far from every other, so it ranks after every finite
model; if one is still chosen (fewer than ``m`` finite models), its non-finite values are missing
from the mean. The aggregator rejects non-finite updates before any rule sees them
(:func:`flame.tensors.check_update`); this is the rules' own guarantee as pure functions.
Integer and bool tensors are reduced in float64 and rounded (see :mod:`flame.aggregation.base`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from flame.aggregation.base import StrategyState, Update, canonical, check_compatible
from flame.aggregation.base import check_state_name as _check_name
from flame.aggregation.kernels import BLOCK, cast_back, compute_dtype, weighted_mean
from flame.aggregation.params import KrumParams, MedianParams, MultiKrumParams, TrimmedMeanParams
from flame.errors import AggregationError
from flame.tensors import Weights

Reducer = Callable[[np.ndarray], np.ndarray]  # (m, width) block -> (width,) values


def column_blocks(
    arrays: Sequence[np.ndarray], dtype: np.dtype
) -> Iterator[tuple[slice, np.ndarray]]:
    """``(columns, stack)`` blocks of the flattened arrays, ``stack`` being ``(n, width)`` in
    ``dtype``; bounds the temporary memory to ``n * BLOCK`` values."""
    flats = [np.asarray(a).reshape(-1) for a in arrays]
    size = flats[0].size
    for start in range(0, size, BLOCK):
        cols = slice(start, min(start + BLOCK, size))
        yield cols, np.stack([f[cols] for f in flats]).astype(dtype, copy=False)


def coordinatewise(like: Weights, updates: Sequence[Update], reduce: Reducer) -> Weights:
    """Apply ``reduce`` to every coordinate's ``n`` values, tensor by tensor.

    ``reduce`` gets an ``(m, width)`` block it may sort in place and works out what it needs
    (e.g. its trim count) from ``m``. A non-finite value is missing: a coordinate that has one is
    reduced over its finite values only, and a coordinate with none keeps ``like``'s value.
    Finding such coordinates costs nothing on sorted blocks (NaN sorts last, -inf first) and a
    check of the result on unsorted ones (a non-finite input makes a mean non-finite).
    """
    result: Weights = {}
    for name, ref in like.items():
        dt = compute_dtype(ref.dtype)
        out = np.empty(ref.size, dtype=dt)
        for cols, block in column_blocks([u.weights[name] for u in updates], dt):
            with np.errstate(invalid="ignore"):  # NaN in, NaN out: replaced just below
                values = reduce(block)
            out[cols] = values
            missing = ~np.isfinite(values)
            missing |= ~np.isfinite(block[0])
            missing |= ~np.isfinite(block[-1])
            if missing.any():
                at = cols.start + np.flatnonzero(missing)
                fallback = np.asarray(ref).reshape(-1)[at]
                out[at] = _over_finite(block[:, missing], reduce, fallback)
        result[name] = cast_back(out.reshape(ref.shape), ref.dtype)
    return result


def _over_finite(columns: np.ndarray, reduce: Reducer, fallback: np.ndarray) -> np.ndarray:
    """``reduce`` of each column's finite values (``fallback`` where a column has none); columns
    with the same number of finite values are reduced together."""
    values = np.where(np.isfinite(columns), columns, np.nan)
    values.sort(axis=0)  # the finite values first, in order; NaN last
    counts = np.count_nonzero(~np.isnan(values), axis=0)
    out = fallback.astype(values.dtype)
    for m in np.unique(counts):
        if m == 0:
            continue
        same = counts == m
        out[same] = reduce(values[:m, same])  # boolean indexing copies: reduce may sort it
    return out


def trimmed_mean(global_weights: Weights, updates: Sequence[Update], beta: float) -> Weights:
    ordered = canonical(updates)
    check_compatible(global_weights, ordered)
    n = len(ordered)
    if n - 2 * math.floor(beta * n) < 1:  # only reachable with beta >= 0.5, which params reject
        raise AggregationError(f"trimmed_mean: beta={beta} trims all {n} updates")

    def reduce(block: np.ndarray) -> np.ndarray:
        cut = math.floor(beta * block.shape[0])
        if cut:
            block.sort(axis=0)
        return _trimmed(block, cut)

    return coordinatewise(global_weights, ordered, reduce)


def phocas(global_weights: Weights, updates: Sequence[Update], beta: float) -> Weights:
    ordered = canonical(updates)
    check_compatible(global_weights, ordered)
    n = len(ordered)
    if n - 2 * math.floor(beta * n) < 1:
        raise AggregationError(f"phocas: beta={beta} trims all {n} updates")

    def reduce(block: np.ndarray) -> np.ndarray:
        m = block.shape[0]
        cut = math.floor(beta * m)
        block.sort(axis=0)
        return _nearest_mean(block, _trimmed(block, cut), m - cut)

    return coordinatewise(global_weights, ordered, reduce)


def _nearest_mean(sorted_block: np.ndarray, centre: np.ndarray, k: int) -> np.ndarray:
    """Per column, the mean of the ``k`` values nearest ``centre``. In a sorted column they are a
    window of ``k`` consecutive rows. Sliding a window up one row swaps its lowest value for the
    next one above it, which brings a nearer value in exactly while row ``i + k`` is nearer than
    row ``i``; that holds for a prefix of the rows, so the window starts at the count of such
    ``i``. A tie does not slide (the lower window), so the result depends only on the values."""
    n = sorted_block.shape[0]
    start = np.zeros(sorted_block.shape[1:], dtype=np.intp)
    for i in range(n - k):
        start += (sorted_block[i + k] - centre) < (centre - sorted_block[i])
    rows = np.arange(n)[:, None]
    window = (rows >= start) & (rows < start + k)
    return np.where(window, sorted_block, 0).sum(axis=0, dtype=sorted_block.dtype) / k


def _trimmed(sorted_block: np.ndarray, cut: int) -> np.ndarray:
    """The mean of each column of a column-sorted block without its ``cut`` smallest and largest
    values."""
    kept = sorted_block[cut : sorted_block.shape[0] - cut]
    return kept.mean(axis=0, dtype=kept.dtype)


def median(global_weights: Weights, updates: Sequence[Update]) -> Weights:
    ordered = canonical(updates)
    check_compatible(global_weights, ordered)

    def reduce(block: np.ndarray) -> np.ndarray:
        block.sort(axis=0)
        return _middle(block)

    return coordinatewise(global_weights, ordered, reduce)


def _middle(sorted_block: np.ndarray) -> np.ndarray:
    """The median row of a block sorted along axis 0 (sorting the short axis is ~2.5x faster
    than ``np.median``'s partition for the few updates of a round)."""
    n = sorted_block.shape[0]
    if n % 2:
        return sorted_block[n // 2]
    return (sorted_block[n // 2 - 1] + sorted_block[n // 2]) / sorted_block.dtype.type(2)


def pairwise_sq_distances(models: Sequence[Weights]) -> np.ndarray:
    """``(n, n)`` squared L2 distances between whole models (float64); a model with a non-finite
    value is infinitely far from every other (see :func:`_distances`)."""
    return _distances(models)[0]


def _distances(models: Sequence[Weights]) -> tuple[np.ndarray, np.ndarray]:
    """``(distances, broken)``: the squared L2 distances between whole models and which models
    have a non-finite value (infinitely far from every other model).

    Computed in float64 from Gram matrices, block by block (BLAS, no per-pair pass over the
    data). Each block is first centred on its coordinate-wise median, which lies among the
    honest values, so honest-to-honest distances keep full precision in the
    ``|a|² + |b|² - 2ab`` form however far the outliers are. Overflowing distances are inf."""
    n = len(models)
    gram = np.zeros((n, n), dtype=np.float64)
    broken = np.zeros(n, dtype=bool)
    for name in models[0]:
        for _, block in column_blocks([m[name] for m in models], np.dtype(np.float64)):
            ordered = np.sort(block, axis=0)
            if np.isfinite(ordered[0]).all() and np.isfinite(ordered[-1]).all():
                block -= _middle(ordered)
            else:  # centre on the median of the finite values; broken rows count as 0
                finite = np.isfinite(block)
                broken |= ~finite.all(axis=1)
                ordered = np.sort(np.where(finite, block, np.nan), axis=0)
                counts = np.count_nonzero(finite, axis=0)
                centre = ordered[np.maximum(counts - 1, 0) // 2, np.arange(block.shape[1])]
                centre[counts == 0] = 0.0
                block = np.where(finite, block - centre, 0.0)
            with np.errstate(over="ignore", invalid="ignore"):
                gram += block @ block.T
    sq = np.diag(gram)
    with np.errstate(over="ignore", invalid="ignore"):
        dist = sq[:, None] + sq[None, :] - 2.0 * gram
    dist = np.nan_to_num(dist, nan=np.inf, posinf=np.inf)
    np.maximum(dist, 0.0, out=dist)
    dist[broken, :] = np.inf
    dist[:, broken] = np.inf
    np.fill_diagonal(dist, 0.0)
    return dist, broken


def krum_scores(models: Sequence[Weights], f: int) -> np.ndarray:
    """Each model's Krum score: the sum of squared distances to its ``n - f - 2`` nearest."""
    return _krum_scores(models, f)[0]


def _krum_scores(models: Sequence[Weights], f: int) -> tuple[np.ndarray, np.ndarray]:
    n = len(models)
    if n < 2 * f + 3:
        raise AggregationError(f"krum needs at least 2f + 3 = {2 * f + 3} updates, got {n}")
    dist, broken = _distances(models)
    neighbours = n - f - 2
    others = np.sort(dist + np.diag(np.full(n, np.inf)), axis=1)[:, :neighbours]
    return np.asarray(others.sum(axis=1)), broken


def multi_krum(
    global_weights: Weights, updates: Sequence[Update], f: int, m: int | None
) -> tuple[Weights, list[str]]:
    """The unweighted mean of the ``m`` best-scored updates and the senders chosen. Models with a
    non-finite value rank after every finite one; if some are still chosen, their non-finite
    values are missing from the mean."""
    ordered = canonical(updates)
    check_compatible(global_weights, ordered)
    models = [u.weights for u in ordered]
    scores, broken = _krum_scores(models, f)
    n = len(ordered)
    count = min(m or n - f, n - f)
    chosen = sorted(np.lexsort((scores, broken))[:count].tolist())  # stable: ties by sender
    picked = [models[i] for i in chosen]
    senders = [ordered[i].sender for i in chosen]
    if broken[chosen].any():
        return _mean_over_finite(picked, global_weights), senders
    return weighted_mean(picked, np.full(count, 1.0 / count), like=global_weights), senders


def _mean_over_finite(models: Sequence[Weights], like: Weights) -> Weights:
    """Per coordinate, the mean of the models' finite values (``like``'s value where none is)."""

    def reduce(block: np.ndarray) -> np.ndarray:
        return block.mean(axis=0, dtype=block.dtype)

    updates = [Update(str(i), w, 1) for i, w in enumerate(models)]
    return coordinatewise(like, updates, reduce)


class _Stateless:
    name = ""

    def to_trainers(self) -> Weights:
        return {}

    def _params(self) -> dict[str, object]:
        return {}

    def state(self) -> StrategyState:
        return StrategyState(tensors={}, data={"name": self.name, "params": self._params()})

    def load_state(self, state: StrategyState) -> None:
        _check_name(state, self.name)


class TrimmedMean(_Stateless):
    name = "trimmed_mean"

    def __init__(self, params: TrimmedMeanParams | None = None) -> None:
        self.params = params or TrimmedMeanParams()

    def _params(self) -> dict[str, object]:
        return self.params.model_dump()

    def aggregate(self, global_weights: Weights, updates: Sequence[Update], rnd: int) -> Weights:
        return trimmed_mean(global_weights, updates, self.params.beta)


class Phocas(TrimmedMean):
    name = "phocas"

    def aggregate(self, global_weights: Weights, updates: Sequence[Update], rnd: int) -> Weights:
        return phocas(global_weights, updates, self.params.beta)


class Median(_Stateless):
    name = "median"

    def __init__(self, params: MedianParams | None = None) -> None:
        self.params = params or MedianParams()

    def aggregate(self, global_weights: Weights, updates: Sequence[Update], rnd: int) -> Weights:
        return median(global_weights, updates)


class MultiKrum(_Stateless):
    """``multi_krum``; ``last_chosen`` lists the senders averaged in the latest round (for logs,
    not state: it is recomputed every round)."""

    name = "multi_krum"

    def __init__(self, params: MultiKrumParams | None = None) -> None:
        self.params = params or MultiKrumParams()
        self.last_chosen: list[str] = []

    def _params(self) -> dict[str, object]:
        return self.params.model_dump()

    def aggregate(self, global_weights: Weights, updates: Sequence[Update], rnd: int) -> Weights:
        result, self.last_chosen = multi_krum(global_weights, updates, self.params.f, self.params.m)
        return result


class Krum(MultiKrum):
    name = "krum"

    def __init__(self, params: KrumParams | None = None) -> None:
        p = params or KrumParams()
        super().__init__(MultiKrumParams(f=p.f, m=1))

    def _params(self) -> dict[str, object]:
        return {"f": self.params.f}
