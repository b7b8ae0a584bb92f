"""Validated keyword arguments of every rule: the models live in :mod:`flame_spec.rules`, so the
control plane refuses bad ``optimizer.kwargs`` at job creation with the same rules."""

from flame_spec.rules import (
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

__all__ = [
    "AdaptiveParams",
    "FedAdagradParams",
    "FedAvgParams",
    "FedBuffParams",
    "FedProxParams",
    "KrumParams",
    "MedianParams",
    "MultiKrumParams",
    "Params",
    "ScaffoldParams",
    "TrimmedMeanParams",
]
