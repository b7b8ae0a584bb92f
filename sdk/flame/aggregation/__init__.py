"""Server-side aggregation rules and client-side helpers, as pure functions over named tensors.

    strategy = make_strategy(job.optimizer)           # OptimizerSpec(name="fedadam", kwargs=...)
    new_global = strategy.aggregate(global_weights, updates, rnd)
    checkpoint(strategy.state())                      # tensors + JSON; load_state() resumes

Rules: fedavg, fedprox, fedadam, fedyogi, fedadagrad, fedbuff, scaffold, trimmed_mean, phocas,
median, krum, multi_krum.
"""

from flame.aggregation.adaptive import FedAdagrad, FedAdam, FedYogi
from flame.aggregation.base import (
    EXTRAS_PREFIX,
    Strategy,
    StrategyState,
    Update,
    pack_extras,
    split_extras,
)
from flame.aggregation.fedavg import FedAvg, FedProx, fedavg
from flame.aggregation.fedbuff import FedBuff, staleness_weight
from flame.aggregation.registry import make_strategy, strategy_names
from flame.aggregation.robust import Krum, Median, MultiKrum, Phocas, TrimmedMean
from flame.aggregation.scaffold import Scaffold

__all__ = [
    "EXTRAS_PREFIX",
    "FedAdagrad",
    "FedAdam",
    "FedAvg",
    "FedBuff",
    "FedProx",
    "FedYogi",
    "Krum",
    "Median",
    "MultiKrum",
    "Phocas",
    "Scaffold",
    "Strategy",
    "StrategyState",
    "TrimmedMean",
    "Update",
    "fedavg",
    "make_strategy",
    "pack_extras",
    "split_extras",
    "staleness_weight",
    "strategy_names",
]
