"""The names and keyword models of every aggregation rule and trainer selector.

A job spec names its server rule (``optimizer``) and its selector with keyword arguments; both are
checked here, when the job is created, against the same models the SDK builds the rule from. So
``{"name": "multi_krum", "kwargs": {"f": -5}}`` is refused at the door with the field named, never
found out later by a task that exits with code 2.

To add a rule: its keyword model here (and an entry in :data:`RULES`), its implementation in the
SDK's ``flame.aggregation`` (and an entry in its registry).
"""

from __future__ import annotations

from pydantic import Field

from flame_spec.types import SpecModel

Count = int  # readability in the models below


class Params(SpecModel):
    """Keyword arguments of one rule or selector."""

    def participants_problem(self, trainers: int) -> str | None:
        """Why a job with ``trainers`` data-consumer tasks cannot run this rule (None: it can)."""
        del trainers
        return None


# -- aggregation rules -----------------------------------------------------------------------


class FedAvgParams(Params):
    pass


class FedProxParams(Params):
    mu: float = Field(default=0.01, ge=0, le=1e6)  # trainers' proximal term; the server is FedAvg


class FedNovaParams(Params):
    """Wang et al. 2020: averages each trainer's step normalised by its local steps."""

    server_lr: float = Field(default=1.0, gt=0, le=1e6)


class AdaptiveParams(Params):
    """Reddi et al. 2021, Algorithm 2: server lr ``eta``, momentum ``beta1``, ``tau`` adaptivity."""

    eta: float = Field(default=0.1, gt=0, le=1e6)
    beta1: float = Field(default=0.9, ge=0, lt=1)
    beta2: float = Field(default=0.99, ge=0, lt=1)
    tau: float = Field(default=1e-3, gt=0, le=1e6)


class FedAdagradParams(Params):
    eta: float = Field(default=0.1, gt=0, le=1e6)
    beta1: float = Field(default=0.9, ge=0, lt=1)
    tau: float = Field(default=1e-3, gt=0, le=1e6)


class FedBuffParams(Params):
    k: Count = Field(default=10, ge=1, le=1_000_000)  # updates per server step
    server_lr: float = Field(default=1.0, gt=0, le=1e6)
    max_staleness: Count = Field(default=10, ge=0, le=1_000_000)  # older updates are rejected


class ScaffoldParams(Params):
    global_lr: float = Field(default=1.0, gt=0, le=1e6)
    num_clients: Count | None = Field(default=None, ge=1)  # N; default: distinct senders seen


class TrimmedMeanParams(Params):
    """Also phocas's: it averages the ``n - floor(beta * n)`` values nearest the trimmed mean."""

    beta: float = Field(default=0.1, ge=0, lt=0.5)  # fraction cut from each end per coordinate


class MedianParams(Params):
    pass


class KrumParams(Params):
    f: Count = Field(default=1, ge=0, le=100_000)  # Byzantine updates tolerated

    def participants_problem(self, trainers: int) -> str | None:
        if trainers < 2 * self.f + 3:
            return (
                f"needs at least 2f + 3 = {2 * self.f + 3} trainers for f={self.f}, "
                f"the job has {trainers}"
            )
        return None


class MultiKrumParams(KrumParams):
    m: Count | None = Field(default=None, ge=1)  # updates averaged; default n - f


RULES: dict[str, type[Params]] = {
    "fedavg": FedAvgParams,
    "fedprox": FedProxParams,
    "fednova": FedNovaParams,
    "fedadam": AdaptiveParams,
    "fedyogi": AdaptiveParams,
    "fedadagrad": FedAdagradParams,
    "fedbuff": FedBuffParams,
    "scaffold": ScaffoldParams,
    "trimmed_mean": TrimmedMeanParams,
    "phocas": TrimmedMeanParams,
    "median": MedianParams,
    "krum": KrumParams,
    "multi_krum": MultiKrumParams,
}

# -- selectors -------------------------------------------------------------------------------


class AllParams(Params):
    pass


class RandomParams(Params):
    k: Count = Field(ge=1, le=1_000_000)


class FractionParams(Params):
    f: float = Field(gt=0, le=1)


class FedBuffSelectorParams(Params):
    c: Count = Field(ge=1, le=1_000_000)  # concurrency: trainers training at the same time


class OortParams(Params):
    k: Count = Field(ge=1, le=1_000_000)
    epsilon: float = Field(default=0.9, ge=0, le=1)  # initial exploration share
    epsilon_decay: float = Field(default=0.98, gt=0, le=1)  # per select()
    epsilon_min: float = Field(default=0.2, ge=0, le=1)
    alpha: float = Field(default=2.0, ge=0, le=100)  # duration penalty exponent
    preferred_duration: float | None = Field(default=None, gt=0)  # T; default: a percentile
    duration_percentile: float = Field(default=80.0, gt=0, le=100)  # T when not given
    cutoff: float = Field(default=0.95, gt=0, le=1)  # exploit among scores >= cutoff * k-th
    staleness_bonus: float = Field(default=0.1, ge=0, le=1e6)  # weight of sqrt(log(rnd) / last)


SELECTORS: dict[str, type[Params]] = {
    "all": AllParams,
    "random": RandomParams,
    "fraction": FractionParams,
    "fedbuff": FedBuffSelectorParams,
    "oort": OortParams,
}
