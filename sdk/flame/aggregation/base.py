"""The aggregation contract: what a trainer hands in, what a strategy keeps, what it returns.

A :class:`Strategy` is a server-side aggregation rule. It is plain logic over named NumPy
tensors (:data:`flame.tensors.Weights`): no I/O, no framework, no hidden state. Everything it
remembers between rounds is returned by :meth:`Strategy.state` as a :class:`StrategyState`
(tensors + JSON-able data), so an aggregator can checkpoint it and a restarted aggregator that
calls :meth:`Strategy.load_state` continues bit-identically.

Every rule first puts the updates in a canonical order (by sender, then base round), so the
result does not depend on the order in which updates arrived over the network.

Shapes and dtypes: every rule returns, for each tensor, an ndarray with exactly the global
model's shape (0-d included) and dtype, for every dtype the wire carries
(:data:`flame.tensors.WIRE_DTYPES`). float32 and float64 tensors are computed in their own
precision, float16 in float32. Integer and bool tensors are state, not trained parameters (a
BatchNorm ``num_batches_tracked`` counter, a mask): each rule combines them as it combines floats
but in float64 (exact up to 2**53), and rounds the result to the nearest integer (half to even),
clipped to the dtype's range, so a bool tensor becomes a majority vote (ties False). The
adaptive rules give them the plain sample-weighted mean: their step of about ``eta`` would round
to no change. Non-finite values: robust rules treat them as missing (see
:mod:`flame.aggregation.robust`); the averaging rules propagate them (the aggregator rejects
non-finite updates before a rule sees them).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from flame.errors import AggregationError, ConfigError
from flame.tensors import Weights

#: Prefix under which strategy extras travel inside one tensor dict (see :func:`pack_extras`).
EXTRAS_PREFIX = "extra/"


@dataclass(frozen=True)
class Update:
    """One trainer's contribution to a round."""

    sender: str
    weights: Weights  # the trainer's new local model (full weights, not a delta)
    num_samples: int
    base_round: int = 0  # round of the global model it started from (staleness; FedBuff)
    extras: Weights = field(default_factory=dict)  # e.g. SCAFFOLD control-variate delta
    meta: Mapping[str, Any] = field(default_factory=dict)  # e.g. loss, duration (Oort utility)


@dataclass(frozen=True)
class StrategyState:
    """Everything a strategy remembers: tensors (saved as safetensors) and JSON-able data."""

    tensors: Weights
    data: dict[str, Any]


@runtime_checkable
class Strategy(Protocol):
    """A server-side aggregation rule (see :func:`flame.aggregation.make_strategy`)."""

    name: str

    def aggregate(self, global_weights: Weights, updates: Sequence[Update], rnd: int) -> Weights:
        """Return the next global model from the current one and this round's updates."""
        ...

    def to_trainers(self) -> Weights:
        """Extra tensors sent to trainers with the global model ({} except SCAFFOLD's ``c``)."""
        ...

    def state(self) -> StrategyState: ...

    def load_state(self, state: StrategyState) -> None: ...


def pack_extras(weights: Mapping[str, np.ndarray], extras: Mapping[str, np.ndarray]) -> Weights:
    """Merge ``extras`` into one tensor dict for the wire, each name prefixed ``extra/``."""
    packed: Weights = dict(weights)
    for name, value in extras.items():
        packed[EXTRAS_PREFIX + name] = value
    return packed


def split_extras(packed: Mapping[str, np.ndarray]) -> tuple[Weights, Weights]:
    """Inverse of :func:`pack_extras`: ``(weights, extras)``."""
    weights: Weights = {}
    extras: Weights = {}
    for name, value in packed.items():
        if name.startswith(EXTRAS_PREFIX):
            extras[name[len(EXTRAS_PREFIX) :]] = value
        else:
            weights[name] = value
    return weights, extras


def canonical(updates: Sequence[Update], *, unique_senders: bool = True) -> list[Update]:
    """Updates sorted by (sender, base_round), after checking there is something to aggregate.

    Sorting makes every rule independent of arrival order, which also makes a resumed run
    reproduce an undisturbed one even when updates arrive in a different order.
    """
    if not updates:
        raise AggregationError("no updates to aggregate")
    ordered = sorted(updates, key=lambda u: (u.sender, u.base_round))
    if unique_senders:
        for a, b in itertools.pairwise(ordered):
            if a.sender == b.sender:
                raise AggregationError(f"two updates from sender {a.sender!r} in one round")
    for u in ordered:
        if u.num_samples < 0:
            raise AggregationError(f"update from {u.sender!r} has negative num_samples")
    return ordered


def check_compatible(global_weights: Mapping[str, np.ndarray], updates: Sequence[Update]) -> None:
    """Raise :class:`AggregationError` unless every update has the global model's names and
    shapes. (Per-update validation with a logged reason is :func:`flame.tensors.check_update`,
    which the aggregator runs on receipt; this is the strategy's own guard.)"""
    names = set(global_weights)
    for u in updates:
        if set(u.weights) != names:
            missing = sorted(names - set(u.weights))
            extra = sorted(set(u.weights) - names)
            raise AggregationError(
                f"update from {u.sender!r} has different tensors "
                f"(missing={missing}, unexpected={extra})"
            )
        for name, ref in global_weights.items():
            if u.weights[name].shape != ref.shape:
                raise AggregationError(
                    f"update from {u.sender!r}: {name} has shape {u.weights[name].shape}, "
                    f"the global model {ref.shape}"
                )


def sample_fractions(updates: Sequence[Update]) -> np.ndarray:
    """Each update's share of the total sample count (float64, sums to 1)."""
    counts = np.array([u.num_samples for u in updates], dtype=np.float64)
    total = counts.sum()
    if total <= 0:
        raise AggregationError("the updates report 0 samples in total; cannot weight by samples")
    return counts / total


def check_state_name(state: StrategyState, name: str) -> None:
    """A checkpoint of one rule cannot be loaded into another (the job's optimizer changed)."""
    got = state.data.get("name")
    if got != name:
        raise ConfigError(
            f"strategy state was written by {got!r}; this job aggregates with {name!r}"
        )
