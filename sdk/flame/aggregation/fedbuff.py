"""FedBuff (Nguyen et al. 2022): buffered asynchronous aggregation.

Trainers train on whatever global model was current when they were started and report back
at any time. The aggregator hands every arriving update to :meth:`FedBuff.add` together with
the current global model and round; each update becomes a delta against the global model it
started from (``base_round``), scaled by ``1 / sqrt(1 + staleness)`` with
``staleness = current_round - base_round``, and summed into the buffer. Once ``k`` updates are
buffered, ``add`` returns True and the aggregator calls :meth:`FedBuff.flush`, which applies::

    x_{r+1} = x_r + server_lr * (sum of scaled deltas) / (number buffered)

and empties the buffer. The new model is round ``r + 1``.

The global models of the last ``max_staleness`` rounds are kept (as state) to compute deltas;
an update that started from an older model is rejected with :class:`RejectedUpdate`, which the
aggregator logs and drops like any other invalid update.

Async aggregator loop::

    for update in arrivals:                      # any order, any time
        try:
            ready = strategy.add(update, global_weights, rnd)
        except RejectedUpdate as exc:
            log.info("update.rejected", sender=exc.sender, reason=exc.reason); continue
        if ready:
            global_weights = strategy.flush(global_weights, rnd); rnd += 1

:meth:`aggregate` does the same for a batch: it adds every update and flushes once if at least
``k`` are buffered, returning the *same object* ``global_weights`` when it did not flush.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from flame.aggregation.base import StrategyState, Update, check_compatible, check_state_name
from flame.aggregation.kernels import cast_back, compute_dtype
from flame.aggregation.params import FedBuffParams
from flame.errors import AggregationError, ConfigError, RejectedUpdate
from flame.tensors import Weights, copy_weights

_BUF = "buffer/"
_HIST = "history/"


def staleness_weight(staleness: int) -> float:
    """FedBuff's polynomial discount ``1 / sqrt(1 + staleness)``."""
    return 1.0 / math.sqrt(1.0 + staleness)


class FedBuff:
    name = "fedbuff"

    def __init__(self, params: FedBuffParams | None = None) -> None:
        self.params = params or FedBuffParams()
        self.buffer: Weights = {}  # sum of scaled deltas
        self.count = 0
        self.senders: list[str] = []  # who is in the buffer (for logs and tests)
        self.history: dict[int, Weights] = {}  # round -> global model trainers may start from

    @property
    def k(self) -> int:
        return self.params.k

    @property
    def ready(self) -> bool:
        return self.count >= self.params.k

    def _remember(self, rnd: int, global_weights: Weights) -> None:
        if rnd not in self.history:
            self.history[rnd] = copy_weights(global_weights)
        oldest = rnd - self.params.max_staleness
        for old in [r for r in self.history if r < oldest]:
            del self.history[old]

    def _validate(self, update: Update, global_weights: Weights, current_round: int) -> None:
        check_compatible(global_weights, [update])
        if update.num_samples < 0:
            raise AggregationError(f"update from {update.sender!r} has negative num_samples")
        staleness = current_round - update.base_round
        if staleness < 0:
            raise RejectedUpdate(
                f"base round {update.base_round} is ahead of the current round {current_round}",
                update.sender,
            )
        known = update.base_round == current_round or update.base_round in self.history
        if staleness > self.params.max_staleness or not known:
            raise RejectedUpdate(
                f"stale: started from round {update.base_round}, now {current_round} "
                f"(max_staleness={self.params.max_staleness})",
                update.sender,
            )

    def add(self, update: Update, global_weights: Weights, current_round: int) -> bool:
        """Buffer one update; True once ``k`` or more are buffered (call :meth:`flush`).

        Raises :class:`RejectedUpdate` for an update from the future or staler than
        ``max_staleness``, :class:`AggregationError` if its tensors do not match the model;
        either way nothing changes.
        """
        self._validate(update, global_weights, current_round)
        self._remember(current_round, global_weights)
        staleness = current_round - update.base_round
        base = self.history[update.base_round]
        scale = staleness_weight(staleness)
        for name, y in update.weights.items():
            dt = compute_dtype(global_weights[name].dtype)
            # out= keeps a 0-d delta an array (a bare subtract returns a NumPy scalar, and
            # ``acc += scalar`` would rebind a local name instead of adding into the buffer).
            delta = np.subtract(y, base[name], out=np.empty(np.shape(y), dt), dtype=dt)
            delta *= dt.type(scale)
            acc = self.buffer.get(name)
            if acc is None:
                self.buffer[name] = delta
            else:
                acc += delta
        self.count += 1
        self.senders.append(update.sender)
        return self.ready

    def flush(self, global_weights: Weights, rnd: int) -> Weights:
        """Apply the buffered deltas to ``global_weights`` (round ``rnd``) and empty the buffer;
        the result is the global model of round ``rnd + 1``."""
        if self.count == 0:
            raise AggregationError("fedbuff: nothing buffered to flush")
        if set(self.buffer) != set(global_weights):
            raise AggregationError("fedbuff: buffered tensors do not match the global model")
        self._remember(rnd, global_weights)
        result: Weights = {}
        for name, x in global_weights.items():
            dt = compute_dtype(x.dtype)
            step = self.buffer[name]
            step *= dt.type(self.params.server_lr / self.count)
            step += x
            result[name] = cast_back(step, x.dtype)
        self.buffer = {}
        self.count = 0
        self.senders = []
        self._remember(rnd + 1, result)
        return result

    def aggregate(self, global_weights: Weights, updates: Sequence[Update], rnd: int) -> Weights:
        """Add ``updates`` (in canonical order) and flush once if ``k`` or more are buffered;
        otherwise return ``global_weights`` itself (``result is global_weights``)."""
        if not updates:
            raise AggregationError("no updates to aggregate")
        ordered = sorted(updates, key=lambda u: (u.sender, u.base_round))
        for update in ordered:  # all or nothing: validate the batch before buffering any
            self._validate(update, global_weights, rnd)
        for update in ordered:
            self.add(update, global_weights, rnd)
        if self.ready:
            return self.flush(global_weights, rnd)
        return global_weights

    def to_trainers(self) -> Weights:
        return {}

    def state(self) -> StrategyState:
        tensors = {_BUF + k: a.copy() for k, a in self.buffer.items()}
        for r, model in self.history.items():
            tensors.update({f"{_HIST}{r}/{k}": a.copy() for k, a in model.items()})
        return StrategyState(
            tensors=tensors,
            data={
                "name": self.name,
                "params": self.params.model_dump(),
                "count": self.count,
                "senders": list(self.senders),
            },
        )

    def load_state(self, state: StrategyState) -> None:
        check_state_name(state, self.name)
        buffer: Weights = {}
        history: dict[int, Weights] = {}
        for key, value in state.tensors.items():
            if key.startswith(_BUF):
                buffer[key[len(_BUF) :]] = value.copy()
            elif key.startswith(_HIST):
                rnd_text, _, name = key[len(_HIST) :].partition("/")
                try:
                    rnd = int(rnd_text)
                except ValueError as exc:
                    raise ConfigError(f"fedbuff: bad history tensor name {key!r}") from exc
                history.setdefault(rnd, {})[name] = value.copy()
            else:
                raise ConfigError(f"fedbuff: unexpected state tensor {key!r}")
        count = int(state.data.get("count", 0))
        if (count == 0) != (not buffer):
            raise ConfigError("fedbuff: buffer tensors and count disagree")
        self.buffer = buffer
        self.history = history
        self.count = count
        self.senders = [str(s) for s in state.data.get("senders", [])]
