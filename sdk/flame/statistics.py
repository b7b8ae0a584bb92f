"""Federated statistics: per-feature summaries computed at each site and combined exactly.

Pure functions over NumPy arrays (no I/O); :mod:`flame.roles.statistics` moves them.

* **count, sum, mean, variance** (sample variance, ``ddof=1``), **min, max**: each site sends its
  count, sum, sum of squared deviations from its own mean (``m2``), min and max per feature
  (missing values, NaN, are left out per feature); :func:`combine` merges them with Chan et al.'s
  pairwise formula, ``m2 = m2_a + m2_b + d**2 * n_a * n_b / (n_a + n_b)`` with ``d`` the
  difference of the means, which equals the pooled statistics up to floating-point rounding.
* **histograms**: the server fixes the bin edges per feature (the job's ``range``, else the
  global min and max), each site counts its values per bin (``numpy.histogram``'s rule: bins
  are half-open, the last one closed; values outside the range are not counted) and the counts
  add up exactly.
* **quantiles** come from a second, finer histogram (``quantile_bins`` bins over the same range)
  that is never published: the estimate interpolates linearly inside the bin that holds the
  pooled quantile (the smallest value with at least a share ``q`` of the values at or below it,
  ``numpy.quantile(..., method="inverted_cdf")``), so it is within one fine bin width,
  ``(hi - lo) / quantile_bins``, of the pooled quantile.
* **suppression**: a site with fewer rows than the job's ``min_count`` sends no values at all;
  a published histogram bin with a count from 1 to ``min_count - 1`` is withheld (``None``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from flame.errors import FlameError
from flame.tensors import Weights


@dataclass(frozen=True)
class Moments:
    """Per-feature count, sum, sum of squared deviations, min and max (float64 arrays)."""

    count: np.ndarray
    sum: np.ndarray
    m2: np.ndarray
    min: np.ndarray
    max: np.ndarray

    def tensors(self) -> Weights:
        return {k: getattr(self, k) for k in ("count", "sum", "m2", "min", "max")}

    @classmethod
    def of(cls, tensors: Weights, features: int) -> Moments:
        """From a site's report; :class:`FlameError` when it is not well formed."""
        try:
            arrays = {k: tensors[k] for k in ("count", "sum", "m2", "min", "max")}
        except KeyError as exc:
            raise FlameError(f"moments lack {exc}") from None
        for name, a in arrays.items():
            if a.shape != (features,) or a.dtype != np.float64:
                raise FlameError(
                    f"moments {name}: expected float64[{features}], not {a.dtype}{list(a.shape)}"
                )
        c = arrays["count"]
        if not np.all(np.isfinite(c)) or np.any(c < 0) or np.any(c != np.round(c)):
            raise FlameError("moments count: not whole non-negative numbers")
        for name in ("sum", "m2"):
            if not np.all(np.isfinite(arrays[name])):
                raise FlameError(f"moments {name}: non-finite values")
        return cls(**arrays)

    @property
    def mean(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.count > 0, self.sum / self.count, np.nan)

    @property
    def variance(self) -> np.ndarray:
        """Sample variance (``ddof=1``); NaN below two values."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.count > 1, self.m2 / (self.count - 1), np.nan)


def local_moments(table: np.ndarray) -> Moments:
    """The moments of one site's ``(rows, features)`` table (NaN = missing)."""
    x = np.asarray(table, dtype=np.float64)
    present = ~np.isnan(x)
    count = present.sum(axis=0).astype(np.float64)
    total = np.where(present, x, 0.0).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, total / count, 0.0)
    m2 = np.where(present, (x - mean) ** 2, 0.0).sum(axis=0)
    lo = np.where(count > 0, np.nanmin(np.where(present, x, np.inf), axis=0), np.nan)
    hi = np.where(count > 0, np.nanmax(np.where(present, x, -np.inf), axis=0), np.nan)
    return Moments(count, total, m2, lo, hi)


def combine(parts: Sequence[Moments]) -> Moments:
    """The moments of the union of the sites' rows (Chan et al.'s pairwise update)."""
    if not parts:
        raise FlameError("no site contributed")
    n, s, m2 = parts[0].count.copy(), parts[0].sum.copy(), parts[0].m2.copy()
    lo, hi = parts[0].min.copy(), parts[0].max.copy()
    for p in parts[1:]:
        total = n + p.count
        with np.errstate(invalid="ignore", divide="ignore"):
            delta = np.where(p.count > 0, p.sum / np.maximum(p.count, 1), 0.0) - np.where(
                n > 0, s / np.maximum(n, 1), 0.0
            )
            extra = np.where(total > 0, delta**2 * n * p.count / np.maximum(total, 1), 0.0)
        m2 = m2 + p.m2 + extra
        n, s = total, s + p.sum
        lo, hi = np.fmin(lo, p.min), np.fmax(hi, p.max)
    return Moments(n, s, m2, lo, hi)


def bin_edges(lo: np.ndarray, hi: np.ndarray, bins: int) -> np.ndarray:
    """``(features, bins + 1)`` edges over ``[lo, hi]`` per feature (a constant feature gets
    ``[v - 0.5, v + 0.5]``; a feature without values ``[0, 1]``)."""
    lo = np.where(np.isfinite(lo), lo, 0.0)
    hi = np.where(np.isfinite(hi), hi, 1.0)
    same = hi <= lo
    lo, hi = np.where(same, lo - 0.5, lo), np.where(same, hi + 0.5, hi)
    return np.stack([np.linspace(a, b, bins + 1) for a, b in zip(lo, hi, strict=True)])


def histograms(table: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """``(features, bins)`` counts of one site's table over the given edges."""
    x = np.asarray(table, dtype=np.float64)
    out = np.zeros((edges.shape[0], edges.shape[1] - 1), dtype=np.int64)
    for f in range(edges.shape[0]):
        col = x[:, f]
        out[f] = np.histogram(col[~np.isnan(col)], bins=edges[f])[0]
    return out


def quantile_from_histogram(counts: np.ndarray, edges: np.ndarray, q: float) -> float:
    """The ``q`` quantile estimated from one feature's histogram (see the module docstring)."""
    total = float(counts.sum())
    if total <= 0:
        return math.nan
    cum = np.cumsum(counts)
    rank = max(math.ceil(q * total - 1e-9), 1)
    k = int(np.searchsorted(cum, rank))
    before = float(cum[k - 1]) if k > 0 else 0.0
    frac = min(max((q * total - before) / float(counts[k]), 0.0), 1.0)
    return float(edges[k] + frac * (edges[k + 1] - edges[k]))


def suppress(counts: np.ndarray, min_count: int) -> list[int | None]:
    """Published bins: a count from 1 to ``min_count - 1`` is withheld (``None``)."""
    return [None if 0 < int(c) < min_count else int(c) for c in counts]
