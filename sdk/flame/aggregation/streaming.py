"""Streaming aggregation: fold each update into a running sum as it arrives, so an aggregator
holds the global model, one sum and the update in hand, however many trainers answer.

    fold = strategy.begin(global_weights, rnd)     # a Streaming strategy
    for update in updates:                         # one at a time; drop each after add()
        fold.add(update)
    new_global = fold.result()

A rule can stream when its result depends on the updates only through sums: FedAvg and FedProx
(``sum_i n_i w_i / sum_i n_i``), and the adaptive optimizers, which step on that average.
Rules that need every update at once (median, trimmed mean, Krum, FedNova's round-wide default
step count, FedBuff's buffer) have no ``begin`` and keep :meth:`Strategy.aggregate`.

Weights are exact: the fold keeps ``sum_i n_i w_i`` and ``sum_i n_i`` and divides once at the
end. The sum is kept in each tensor's compute dtype (see
:func:`~flame.aggregation.kernels.compute_dtype`: float32 for a float32 model), so its memory is
one model. Floating-point addition is not
associative: the result equals the batch :meth:`Strategy.aggregate` within rounding, and is
bit-reproducible when updates are added in the same order. The aggregator adds them in sender
order whatever order they arrive in (:mod:`flame.roles.folding`), as :func:`canonical` sorts
them in the batch path.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

import numpy as np

from flame.aggregation.base import Update
from flame.aggregation.kernels import BLOCK, cast_back, compute_dtype
from flame.errors import AggregationError
from flame.tensors import Weights


@runtime_checkable
class Fold(Protocol):
    """One round's running aggregate (from :meth:`Streaming.begin`)."""

    def check(self, update: Update) -> None:
        """Raise :class:`AggregationError` if :meth:`add` would refuse ``update`` (changes
        nothing; lets a caller refuse an update on arrival that it adds later)."""
        ...

    def add(self, update: Update) -> None:
        """Fold ``update`` in; a refused update (:class:`AggregationError`) changes nothing."""
        ...

    def result(self) -> Weights:
        """The next global model. The fold is used up (its sums become the result)."""
        ...


@runtime_checkable
class Streaming(Protocol):
    """A strategy that can aggregate a round one update at a time."""

    def begin(self, global_weights: Weights, rnd: int) -> Fold: ...


def nbytes(weights: Mapping[str, np.ndarray]) -> int:
    return sum(int(a.nbytes) for a in weights.values())


def _axpy(acc: np.ndarray, x: np.ndarray, a: float, first: bool) -> None:
    """``acc = a * x`` (first) or ``acc += a * x``, in ``acc``'s dtype, in cache-sized blocks so
    the product never needs a model-sized temporary."""
    flat_acc = acc.reshape(-1)
    flat_x = np.asarray(x).reshape(-1)
    coeff = acc.dtype.type(a)
    if first:
        np.multiply(flat_x, coeff, out=flat_acc, casting="unsafe")
        return
    if flat_acc.size <= BLOCK:  # one block: the same two operations, without the loop
        tmp = np.empty(flat_acc.size, dtype=acc.dtype)
        np.multiply(flat_x, coeff, out=tmp, casting="unsafe")
        flat_acc += tmp
        return
    scratch = np.empty(min(BLOCK, flat_acc.size), dtype=acc.dtype)
    for start in range(0, flat_acc.size, BLOCK):
        stop = min(start + BLOCK, flat_acc.size)
        tmp = scratch[: stop - start]
        np.multiply(flat_x[start:stop], coeff, out=tmp, casting="unsafe")
        flat_acc[start:stop] += tmp


class RunningSum:
    """Per-tensor ``sum_i c_i t_i`` and ``sum_i c_i`` over tensor dicts shaped like ``like``
    (each sum in the tensor's compute dtype; allocated by the first :meth:`add`).

    ``uniform_if_unweighted``: while every coefficient so far is 0, sum with coefficient 1 (the
    plain mean), and restart at the first positive one; the zero-weight terms add nothing to a
    weighted sum, so the result is exactly "weighted mean, or plain mean if all weights are 0".
    """

    def __init__(self, like: Mapping[str, np.ndarray], *, uniform_if_unweighted: bool = False):
        self.like = dict(like)
        self.uniform_if_unweighted = uniform_if_unweighted
        self.sums: Weights = {}
        self.total = 0.0
        self.count = 0
        self._uniform = False  # the sums are the plain sum (no positive weight seen yet)

    def check(self, tensors: Mapping[str, np.ndarray], sender: str, what: str = "") -> None:
        if tensors.keys() != self.like.keys():
            missing = sorted(self.like.keys() - tensors.keys())
            extra = sorted(tensors.keys() - self.like.keys())
            raise AggregationError(
                f"update from {sender!r} has different {what}tensors "
                f"(missing={missing}, unexpected={extra})"
            )
        for name, ref in self.like.items():
            if tensors[name].shape != ref.shape:
                raise AggregationError(
                    f"update from {sender!r}: {what}{name} has shape {tensors[name].shape}, "
                    f"the global model {ref.shape}"
                )

    def add(self, tensors: Mapping[str, np.ndarray], coeff: float) -> None:
        """Add ``coeff * tensors`` (call :meth:`check` first: a half-added update would corrupt
        the sums)."""
        if coeff < 0 or not np.isfinite(coeff):
            raise AggregationError(f"weight {coeff} is not a finite non-negative number")
        weight = coeff
        if self.uniform_if_unweighted:
            if coeff == 0 and self.total == 0:
                weight = 1.0
                self._uniform = True
            elif coeff > 0 and self._uniform:  # the plain sum so far was only a fallback
                self.sums = {}
                self._uniform = False
            elif coeff == 0:
                self.count += 1
                return
        first = not self.sums
        for name, ref in self.like.items():
            if first:
                self.sums[name] = np.empty(ref.shape, compute_dtype(ref.dtype))
            _axpy(self.sums[name], tensors[name], weight, first)
        self.total += coeff
        self.count += 1

    def mean(self) -> Weights:
        """The mean in each tensor's compute dtype; the sums become it (no copy)."""
        if not self.count:
            raise AggregationError("no updates to aggregate")
        divisor = float(self.count) if self._uniform else self.total
        if divisor <= 0:
            raise AggregationError(
                "the updates report 0 samples in total; cannot weight by samples"
            )
        means, self.sums = self.sums, {}
        for arr in means.values():
            arr /= arr.dtype.type(divisor)
        return means

    def result(self) -> Weights:
        """The mean, each tensor cast back to the dtype of the same tensor in ``like``."""
        means = self.mean()
        return {name: cast_back(means[name], ref.dtype) for name, ref in self.like.items()}


class MeanFold:
    """FedAvg's fold: the sample-weighted mean ``sum_i n_i w_i / sum_i n_i`` of the updates'
    weights, each tensor cast back to the global model's dtype."""

    def __init__(self, global_weights: Weights) -> None:
        self.sum = RunningSum(global_weights)
        self.senders: set[str] = set()

    def check(self, update: Update) -> None:
        if update.sender in self.senders:
            raise AggregationError(f"two updates from sender {update.sender!r} in one round")
        if update.num_samples < 0:
            raise AggregationError(f"update from {update.sender!r} has negative num_samples")
        self.sum.check(update.weights, update.sender)

    def add(self, update: Update) -> None:
        self.check(update)
        self.sum.add(update.weights, float(update.num_samples))
        self.senders.add(update.sender)

    def mean(self) -> Weights:
        """The average in the compute dtype (fresh arrays the caller may use as scratch)."""
        return self.sum.mean()

    def result(self) -> Weights:
        return self.sum.result()
