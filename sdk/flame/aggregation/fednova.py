"""FedNova (Wang et al. 2020, "Tackling the objective inconsistency problem in heterogeneous
federated optimization"): normalised averaging for trainers that did different amounts of
local work.

With ``x`` the global model, trainer ``i``'s model ``x_i`` after ``tau_i`` local steps and
``p_i = n_i / sum_j n_j`` its (raw) sample share::

    d_i     = (x - x_i) / tau_i                 # its average step
    tau_eff = sum_i p_i * tau_i
    x'      = x - server_lr * tau_eff * sum_i p_i * d_i

so a trainer that did many steps does not drag the model towards its own optimum. ``tau_i``
is the ``steps`` a trainer reports (``Trainer.report_work``); one that reports none counts as
having done the most steps any update of the round reported (or 1 if none did). Updates with
0 steps did no work and are left out. Integer and bool tensors (state, not parameters) get
the sample-weighted mean. With every ``tau_i`` equal and ``server_lr`` 1 this is FedAvg.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from flame.aggregation.base import (
    StrategyState,
    Update,
    canonical,
    check_compatible,
    check_state_name,
)
from flame.aggregation.kernels import cast_back, compute_dtype, is_trained, weighted_mean
from flame.errors import AggregationError
from flame.tensors import Weights
from flame_spec.rules import FedNovaParams


def _steps(updates: Sequence[Update]) -> np.ndarray:
    reported = [u.meta.get("steps") for u in updates]
    known = [float(s) for s in reported if s is not None]
    default = max(known) if known else 1.0
    steps = np.array([default if s is None else float(s) for s in reported], dtype=np.float64)
    if not np.all(np.isfinite(steps)) or np.any(steps < 0):
        raise AggregationError("fednova: local steps must be finite and non-negative")
    return steps


def fednova(global_weights: Weights, updates: Sequence[Update], server_lr: float = 1.0) -> Weights:
    """One FedNova server step (see the module docstring)."""
    ordered = canonical(updates)
    check_compatible(global_weights, ordered)
    steps = _steps(ordered)
    worked = [(u, t) for u, t in zip(ordered, steps, strict=True) if t > 0]
    if not worked:
        return {k: v.copy() for k, v in global_weights.items()}
    samples = np.array([float(u.meta.get("samples", u.num_samples)) for u, _ in worked])
    if samples.sum() <= 0:
        raise AggregationError("fednova: the updates report 0 samples in total")
    p = samples / samples.sum()
    tau = np.array([t for _, t in worked])
    tau_eff = float(p @ tau)
    out: Weights = {}
    for name, ref in global_weights.items():
        if not is_trained(ref.dtype):
            out[name] = weighted_mean([{name: u.weights[name]} for u, _ in worked], p)[name]
            continue
        ct = compute_dtype(ref.dtype)
        x = np.asarray(ref, dtype=np.float64)
        direction = np.zeros_like(x)
        for (u, t), share in zip(worked, p, strict=True):
            direction += share * (x - np.asarray(u.weights[name], dtype=np.float64)) / t
        new = x - server_lr * tau_eff * direction
        out[name] = cast_back(new.astype(ct), ref.dtype)
    return out


class FedNova:
    """Stateless normalised averaging (``server_lr``: the server's step size, default 1)."""

    name = "fednova"

    def __init__(self, params: FedNovaParams | None = None) -> None:
        self.params = params or FedNovaParams()

    def aggregate(self, global_weights: Weights, updates: Sequence[Update], rnd: int) -> Weights:
        return fednova(global_weights, updates, self.params.server_lr)

    def to_trainers(self) -> Weights:
        return {}

    def state(self) -> StrategyState:
        return StrategyState(
            tensors={}, data={"name": self.name, "params": self.params.model_dump()}
        )

    def load_state(self, state: StrategyState) -> None:
        check_state_name(state, self.name)
