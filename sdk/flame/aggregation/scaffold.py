"""SCAFFOLD (Karimireddy et al. 2020): control variates correct client drift.

The server keeps a control variate ``c`` (one tensor per model tensor, zeros at first) and sends
it to the trainers with the global model (:meth:`Scaffold.to_trainers`). Each trainer corrects
its gradients with ``c - c_i`` and returns, in ``Update.extras``, the change of its own control
variate ``Δc_i = c_i+ - c_i`` (:mod:`flame.aggregation.client` computes both). The server then
applies, over the ``S`` updates of the round and ``N`` trainers in total::

    x = x + global_lr * mean_i(y_i - x)
    c = c + (|S| / N) * mean_i(Δc_i)

Means are unweighted, as in the paper. ``N`` is ``num_clients`` when given, else the number of
distinct senders seen so far (kept in the state).
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
from flame.aggregation.kernels import cast_back, compute_dtype, weighted_sum
from flame.aggregation.params import ScaffoldParams
from flame.errors import AggregationError, ConfigError
from flame.tensors import Weights, copy_weights


class Scaffold:
    name = "scaffold"

    def __init__(self, params: ScaffoldParams | None = None) -> None:
        self.params = params or ScaffoldParams()
        self.c: Weights = {}
        self.seen: list[str] = []  # distinct senders so far (N when num_clients is not set)

    def init(self, global_weights: Weights) -> None:
        """Create ``c = 0`` shaped like the model (done by the first :meth:`aggregate` too);
        call it before the first round so :meth:`to_trainers` already returns ``c``."""
        if not self.c:
            self.c = {
                k: np.zeros(x.shape, compute_dtype(x.dtype)) for k, x in global_weights.items()
            }

    def aggregate(self, global_weights: Weights, updates: Sequence[Update], rnd: int) -> Weights:
        ordered = canonical(updates)
        check_compatible(global_weights, ordered)
        for u in ordered:
            if set(u.extras) != set(global_weights):
                raise AggregationError(
                    f"scaffold: update from {u.sender!r} must carry its control-variate delta "
                    "for every model tensor in extras"
                )
            for name, ref in global_weights.items():
                if u.extras[name].shape != ref.shape:
                    raise AggregationError(
                        f"scaffold: update from {u.sender!r}: extras {name} has shape "
                        f"{u.extras[name].shape}, the model {ref.shape}"
                    )
                if not np.all(np.isfinite(u.extras[name])):  # c would be poisoned for good
                    raise AggregationError(
                        f"scaffold: update from {u.sender!r}: extras {name} is not finite"
                    )
        if self.c and set(self.c) != set(global_weights):
            raise ConfigError("scaffold: the model's tensors changed since c was created")
        self.init(global_weights)
        n = len(ordered)
        seen = sorted(set(self.seen) | {u.sender for u in ordered})
        total = self.params.num_clients or len(seen)
        uniform = np.full(n, 1.0 / n)
        result: Weights = {}
        for name, x in global_weights.items():
            dt = compute_dtype(x.dtype)
            # Means in the compute dtype (fresh arrays, updated in place): rounding an integer
            # tensor's mean before the step would round it twice.
            step = weighted_sum([u.weights[name] for u in ordered], uniform, x.dtype)
            step -= x
            step *= dt.type(self.params.global_lr)
            step += x
            result[name] = cast_back(step, x.dtype)
            dc = weighted_sum([u.extras[name] for u in ordered], uniform, x.dtype)
            dc *= dt.type(min(1.0, n / total))
            self.c[name] += dc
        self.seen = seen
        return result

    def to_trainers(self) -> Weights:
        """The server control variate ``c`` (same tensor names as the model); {} before the
        first round unless :meth:`init` was called (trainers then take ``c = 0``)."""
        return {k: v.copy() for k, v in self.c.items()}

    def state(self) -> StrategyState:
        return StrategyState(
            tensors={k: v.copy() for k, v in self.c.items()},
            data={"name": self.name, "params": self.params.model_dump(), "seen": list(self.seen)},
        )

    def load_state(self, state: StrategyState) -> None:
        check_state_name(state, self.name)
        self.c = copy_weights(state.tensors)
        self.seen = sorted(str(s) for s in state.data.get("seen", []))
