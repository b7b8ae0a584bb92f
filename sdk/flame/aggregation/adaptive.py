"""Adaptive server optimizers over the pseudo-gradient (Reddi et al. 2021, "Adaptive Federated
Optimization", Algorithm 2): FedAdagrad, FedAdam, FedYogi.

Each round, with ``x`` the global model and ``Δ = fedavg(updates) - x`` (sample-weighted)::

    m = beta1 * m + (1 - beta1) * Δ
    v = v + Δ²                                            # FedAdagrad
    v = beta2 * v + (1 - beta2) * Δ²                      # FedAdam
    v = v - (1 - beta2) * Δ² * sign(v - Δ²)               # FedYogi
    x = x + eta * m / (sqrt(v) + tau)

``m`` starts at 0 and ``v`` at ``tau²`` (the paper's ``v_{-1} >= tau²``); no bias correction, as
in the paper. Both moments live in :meth:`state` and are created on the first round, for the
float tensors only: an integer or bool tensor (a counter such as BatchNorm's
``num_batches_tracked``) takes the sample-weighted mean, rounded, because an adaptive step of
about ``eta`` per coordinate would round to no change and the counter would never move.
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
    sample_fractions,
)
from flame.aggregation.kernels import cast_back, compute_dtype, is_trained, weighted_sum
from flame.aggregation.params import AdaptiveParams, FedAdagradParams, Params
from flame.aggregation.streaming import MeanFold
from flame.errors import ConfigError
from flame.tensors import Weights, copy_weights

_M = "m/"
_V = "v/"


class _Adaptive:
    name = ""
    params: Params

    def __init__(self, eta: float, beta1: float, beta2: float, tau: float) -> None:
        self.eta = eta
        self.beta1 = beta1
        self.beta2 = beta2
        self.tau = tau
        self.m: Weights = {}
        self.v: Weights = {}

    def _second_moment(self, v: np.ndarray, sq: np.ndarray) -> None:
        raise NotImplementedError

    def aggregate(self, global_weights: Weights, updates: Sequence[Update], rnd: int) -> Weights:
        ordered = canonical(updates)
        check_compatible(global_weights, ordered)
        fractions = sample_fractions(ordered)
        # The sample-weighted mean per tensor, in the compute dtype (fresh arrays, used as scratch).
        means = {
            name: weighted_sum([u.weights[name] for u in ordered], fractions, x.dtype)
            for name, x in global_weights.items()
        }
        return self.step(global_weights, means)

    def begin(self, global_weights: Weights, rnd: int) -> _AdaptiveFold:
        """Streaming (:mod:`flame.aggregation.streaming`): the step on the streamed average."""
        return _AdaptiveFold(self, global_weights)

    def step(self, global_weights: Weights, means: Weights) -> Weights:
        """The optimizer step from ``x`` to the next model, given the sample-weighted mean of
        every tensor in its compute dtype (``means`` is consumed: its arrays are scratch)."""
        trained = {k: x for k, x in global_weights.items() if is_trained(x.dtype)}
        if not self.m:
            self.m = {k: np.zeros(x.shape, compute_dtype(x.dtype)) for k, x in trained.items()}
            self.v = {
                k: np.full(x.shape, self.tau**2, compute_dtype(x.dtype)) for k, x in trained.items()
            }
        elif set(self.m) != set(trained):
            raise ConfigError(
                f"{self.name}: the model's tensors changed since the moments were created"
            )
        result: Weights = {}
        for name, x in global_weights.items():
            avg = means.pop(name)
            if name not in trained:  # integer/bool state: an adaptive step would round to 0
                result[name] = cast_back(avg, x.dtype)
                continue
            dt = avg.dtype
            delta = np.subtract(avg, x, out=avg)  # Δ
            m, v = self.m[name], self.v[name]
            m *= dt.type(self.beta1)
            m += dt.type(1 - self.beta1) * delta
            np.square(delta, out=delta)  # delta now holds Δ²
            self._second_moment(v, delta)
            step = np.sqrt(v, out=delta)
            step += dt.type(self.tau)
            np.divide(m, step, out=step)
            step *= dt.type(self.eta)
            step += x
            result[name] = cast_back(step, x.dtype)
        return result

    def to_trainers(self) -> Weights:
        return {}

    def state(self) -> StrategyState:
        tensors = {_M + k: a.copy() for k, a in self.m.items()}
        tensors.update({_V + k: a.copy() for k, a in self.v.items()})
        return StrategyState(
            tensors=tensors,
            data={
                "name": self.name,
                "params": self.params.model_dump(),
            },
        )

    def load_state(self, state: StrategyState) -> None:
        check_state_name(state, self.name)
        m = {k[len(_M) :]: v for k, v in state.tensors.items() if k.startswith(_M)}
        v = {k[len(_V) :]: a for k, a in state.tensors.items() if k.startswith(_V)}
        if set(m) != set(v) or len(m) + len(v) != len(state.tensors):
            raise ConfigError(f"{self.name}: state tensors are not a matching set of m/ and v/")
        self.m = copy_weights(m)
        self.v = copy_weights(v)


class _AdaptiveFold(MeanFold):
    """Streams the sample-weighted mean; :meth:`result` takes the optimizer's step on it."""

    def __init__(self, rule: _Adaptive, global_weights: Weights) -> None:
        super().__init__(global_weights)
        self.rule = rule
        self.global_weights = global_weights

    def result(self) -> Weights:
        return self.rule.step(self.global_weights, self.mean())


class FedAdagrad(_Adaptive):
    name = "fedadagrad"

    def __init__(self, params: FedAdagradParams | None = None) -> None:
        self.params: Params = params or FedAdagradParams()
        p = self.params
        super().__init__(p.eta, p.beta1, 0.0, p.tau)

    def _second_moment(self, v: np.ndarray, sq: np.ndarray) -> None:
        v += sq


class FedAdam(_Adaptive):
    name = "fedadam"

    def __init__(self, params: AdaptiveParams | None = None) -> None:
        self.params = params or AdaptiveParams()
        p = self.params
        super().__init__(p.eta, p.beta1, p.beta2, p.tau)

    def _second_moment(self, v: np.ndarray, sq: np.ndarray) -> None:
        v *= v.dtype.type(self.beta2)
        v += v.dtype.type(1 - self.beta2) * sq


class FedYogi(_Adaptive):
    name = "fedyogi"

    def __init__(self, params: AdaptiveParams | None = None) -> None:
        self.params = params or AdaptiveParams()
        p = self.params
        super().__init__(p.eta, p.beta1, p.beta2, p.tau)

    def _second_moment(self, v: np.ndarray, sq: np.ndarray) -> None:
        sign = np.sign(v - sq)
        sign *= sq
        sign *= v.dtype.type(1 - self.beta2)
        v -= sign
