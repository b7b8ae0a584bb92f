"""FedAvg (McMahan et al. 2017) and FedProx (Li et al. 2020, server side = FedAvg)."""

from __future__ import annotations

from collections.abc import Sequence

from flame.aggregation.base import (
    StrategyState,
    Update,
    canonical,
    check_compatible,
    check_state_name,
    sample_fractions,
)
from flame.aggregation.kernels import weighted_mean
from flame.aggregation.params import FedAvgParams, FedProxParams
from flame.aggregation.streaming import MeanFold
from flame.tensors import Weights


def fedavg(global_weights: Weights, updates: Sequence[Update]) -> Weights:
    """The sample-weighted mean of the updates' weights: ``sum_i n_i w_i / sum_i n_i``."""
    ordered = canonical(updates)
    check_compatible(global_weights, ordered)
    return weighted_mean(
        [u.weights for u in ordered], sample_fractions(ordered), like=global_weights
    )


class FedAvg:
    """Stateless sample-weighted averaging."""

    name = "fedavg"

    def __init__(self, params: FedAvgParams | None = None) -> None:
        self.params = params or FedAvgParams()

    def aggregate(self, global_weights: Weights, updates: Sequence[Update], rnd: int) -> Weights:
        return fedavg(global_weights, updates)

    def begin(self, global_weights: Weights, rnd: int) -> MeanFold:
        """Streaming FedAvg (:mod:`flame.aggregation.streaming`)."""
        return MeanFold(global_weights)

    def to_trainers(self) -> Weights:
        return {}

    def state(self) -> StrategyState:
        return StrategyState(tensors={}, data={"name": self.name, "params": self._params()})

    def _params(self) -> dict[str, object]:
        return {}

    def load_state(self, state: StrategyState) -> None:
        check_state_name(state, self.name)


class FedProx(FedAvg):
    """FedAvg on the server; trainers add ``mu/2 ||w - w_global||²`` to their loss
    (see :mod:`flame.aggregation.client`). ``mu`` is exposed for the trainer side."""

    name = "fedprox"

    def __init__(self, params: FedProxParams | None = None) -> None:
        super().__init__()
        self.prox = params or FedProxParams()

    def _params(self) -> dict[str, object]:
        return self.prox.model_dump()

    @property
    def mu(self) -> float:
        return self.prox.mu
