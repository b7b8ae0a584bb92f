"""``make_strategy``: an :class:`~flame.config.OptimizerSpec` becomes a :class:`Strategy`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from flame.aggregation.adaptive import FedAdagrad, FedAdam, FedYogi
from flame.aggregation.base import Strategy
from flame.aggregation.fedavg import FedAvg, FedProx
from flame.aggregation.fedbuff import FedBuff
from flame.aggregation.params import (
    AdaptiveParams,
    FedAdagradParams,
    FedAvgParams,
    FedBuffParams,
    FedProxParams,
    KrumParams,
    MedianParams,
    MultiKrumParams,
    Params,
    ScaffoldParams,
    TrimmedMeanParams,
)
from flame.aggregation.robust import Krum, Median, MultiKrum, Phocas, TrimmedMean
from flame.aggregation.scaffold import Scaffold
from flame.config import OptimizerSpec
from flame.errors import ConfigError

_RULES: dict[str, tuple[type[Params], Callable[[Any], Strategy]]] = {
    "fedavg": (FedAvgParams, FedAvg),
    "fedprox": (FedProxParams, FedProx),
    "fedadam": (AdaptiveParams, FedAdam),
    "fedyogi": (AdaptiveParams, FedYogi),
    "fedadagrad": (FedAdagradParams, FedAdagrad),
    "fedbuff": (FedBuffParams, FedBuff),
    "scaffold": (ScaffoldParams, Scaffold),
    "trimmed_mean": (TrimmedMeanParams, TrimmedMean),
    "phocas": (TrimmedMeanParams, Phocas),
    "median": (MedianParams, Median),
    "krum": (KrumParams, Krum),
    "multi_krum": (MultiKrumParams, MultiKrum),
}


def strategy_names() -> list[str]:
    return sorted(_RULES)


def make_strategy(spec: OptimizerSpec) -> Strategy:
    """Build the rule ``spec.name`` with ``spec.kwargs``; :class:`ConfigError` on an unknown
    name or bad kwargs (the message names the offending field)."""
    entry = _RULES.get(spec.name.lower())
    if entry is None:
        raise ConfigError(
            f"unknown optimizer {spec.name!r}; choose one of {', '.join(strategy_names())}"
        )
    params_type, factory = entry
    try:
        params = params_type.model_validate(spec.kwargs)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'kwargs'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"optimizer {spec.name!r}: bad kwargs ({problems})") from exc
    return factory(params)
