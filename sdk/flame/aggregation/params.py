"""Validated hyperparameters of every rule (``OptimizerSpec.kwargs`` is parsed into these)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Params(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class FedAvgParams(Params):
    pass


class FedProxParams(Params):
    mu: float = Field(default=0.01, ge=0)  # used by trainers (proximal term); the server is FedAvg


class AdaptiveParams(Params):
    """Reddi et al. 2021, Algorithm 2: server lr ``eta``, momentum ``beta1``, ``tau`` adaptivity."""

    eta: float = Field(default=0.1, gt=0)
    beta1: float = Field(default=0.9, ge=0, lt=1)
    beta2: float = Field(default=0.99, ge=0, lt=1)
    tau: float = Field(default=1e-3, gt=0)


class FedAdagradParams(Params):
    eta: float = Field(default=0.1, gt=0)
    beta1: float = Field(default=0.9, ge=0, lt=1)
    tau: float = Field(default=1e-3, gt=0)


class FedBuffParams(Params):
    k: int = Field(default=10, ge=1)  # updates per server step
    server_lr: float = Field(default=1.0, gt=0)
    max_staleness: int = Field(default=10, ge=0)  # older updates are rejected


class ScaffoldParams(Params):
    global_lr: float = Field(default=1.0, gt=0)
    num_clients: int | None = Field(default=None, ge=1)  # N; default: distinct senders seen


class TrimmedMeanParams(Params):
    """Also phocas's: it averages the ``n - floor(beta * n)`` values nearest the trimmed mean."""

    beta: float = Field(default=0.1, ge=0, lt=0.5)  # fraction cut from each end per coordinate


class MedianParams(Params):
    pass


class KrumParams(Params):
    f: int = Field(default=1, ge=0)  # Byzantine updates tolerated; needs n >= 2f + 3


class MultiKrumParams(Params):
    f: int = Field(default=1, ge=0)
    m: int | None = Field(default=None, ge=1)  # updates averaged; default n - f
