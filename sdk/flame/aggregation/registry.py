"""``make_strategy``: an :class:`~flame.config.OptimizerSpec` becomes a :class:`Strategy`.

The rule's name and keyword arguments were checked when the spec was parsed
(:mod:`flame_spec.rules`); this table only says which class implements each name. A test checks
that every rule :mod:`flame_spec.rules` accepts has an implementation here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flame.aggregation.adaptive import FedAdagrad, FedAdam, FedYogi
from flame.aggregation.base import Strategy
from flame.aggregation.fedavg import FedAvg, FedProx
from flame.aggregation.fedbuff import FedBuff
from flame.aggregation.fednova import FedNova
from flame.aggregation.robust import Krum, Median, MultiKrum, Phocas, TrimmedMean
from flame.aggregation.scaffold import Scaffold
from flame.config import OptimizerSpec
from flame.errors import ConfigError

IMPLEMENTATIONS: dict[str, Callable[[Any], Strategy]] = {
    "fedavg": FedAvg,
    "fedprox": FedProx,
    "fednova": FedNova,
    "fedadam": FedAdam,
    "fedyogi": FedYogi,
    "fedadagrad": FedAdagrad,
    "fedbuff": FedBuff,
    "scaffold": Scaffold,
    "trimmed_mean": TrimmedMean,
    "phocas": Phocas,
    "median": Median,
    "krum": Krum,
    "multi_krum": MultiKrum,
}


def strategy_names() -> list[str]:
    return sorted(IMPLEMENTATIONS)


def make_strategy(spec: OptimizerSpec) -> Strategy:
    """Build the rule ``spec.name`` with its (already validated) ``spec.kwargs``."""
    factory = IMPLEMENTATIONS.get(spec.name)
    if factory is None:  # flame_spec knows a rule this SDK does not implement
        raise ConfigError(f"optimizer {spec.name!r} is not implemented by this SDK")
    return factory(spec.params())
