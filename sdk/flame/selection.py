"""Trainer selection: which of the available trainers take part in a round.

    selector = make_selector(job.selector, seed=job.seed)
    chosen = selector.select(available_trainer_ids, rnd)
    ...
    selector.report(sender, utility=meta.get("utility"), duration=meta.get("duration"))
    checkpoint(selector.state())                      # JSON; load_state() resumes exactly

Selectors are deterministic given the seed and the sequence of calls: candidates are sorted
first (arrival order never matters) and all randomness comes from one NumPy PCG64 generator
whose state is part of :meth:`Selector.state`, so a restored selector picks exactly what the
undisturbed one would have picked.

- ``all``: every candidate.
- ``random(k)``: ``k`` candidates uniformly without replacement (all if fewer).
- ``fraction(f)``: ``floor(f * n)`` candidates uniformly, at least 1.
- ``fedbuff(c)``: asynchronous concurrency: ``select`` returns up to ``c`` minus the number in
  flight of the candidates not already in flight and marks them in flight; ``report(sender)``
  marks one done. A trainer in flight that is no longer among the candidates (it died) frees
  its slot.
- ``oort(k, ...)``: Oort (Lai et al. OSDI'21). Reported trainers are scored by statistical
  utility (:func:`statistical_utility` of their sample losses, normalised), plus a staleness
  bonus, times a duration penalty ``(T / duration) ** alpha`` when slower than the preferred
  round duration ``T``; an ``epsilon`` share of the ``k`` slots (decaying every round) explores
  trainers never reported. Exploitation samples, by score, among those scoring at least
  ``cutoff`` times the k-th best score.

``report`` is a no-op for ``all``, ``random`` and ``fraction``: they use no feedback.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from flame.config import SelectorSpec
from flame.errors import ConfigError
from flame_spec.rules import (
    AllParams,
    FedBuffSelectorParams,
    FractionParams,
    OortParams,
    Params,
    RandomParams,
)


@runtime_checkable
class Selector(Protocol):
    name: str

    def select(self, candidates: Sequence[str], rnd: int) -> list[str]: ...

    def report(
        self, sender: str, *, utility: float | None = None, duration: float | None = None
    ) -> None: ...

    def state(self) -> dict[str, Any]: ...

    def load_state(self, state: dict[str, Any]) -> None: ...


def statistical_utility(sample_losses: Sequence[float] | np.ndarray) -> float:
    """Oort's statistical utility of a trainer: ``|B| * sqrt(mean(loss²))`` over the per-sample
    training losses ``B`` of its last round (a trainer reports it as ``meta["utility"]``)."""
    losses = np.asarray(sample_losses, dtype=np.float64).reshape(-1)
    if losses.size == 0:
        return 0.0
    return float(losses.size * math.sqrt(float(np.mean(losses**2))))


# --- randomness as plain data -----------------------------------------------------------------


def _rng_state(rng: np.random.Generator) -> dict[str, Any]:
    st = rng.bit_generator.state
    return {
        "state": format(st["state"]["state"], "x"),
        "inc": format(st["state"]["inc"], "x"),
        "has_uint32": int(st["has_uint32"]),
        "uinteger": int(st["uinteger"]),
    }


def _set_rng_state(rng: np.random.Generator, data: dict[str, Any]) -> None:
    try:
        rng.bit_generator.state = {
            "bit_generator": "PCG64",
            "state": {"state": int(data["state"], 16), "inc": int(data["inc"], 16)},
            "has_uint32": int(data["has_uint32"]),
            "uinteger": int(data["uinteger"]),
        }
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"selector state has an invalid rng state: {exc}") from exc


def _unique_sorted(candidates: Sequence[str]) -> list[str]:
    return sorted(set(candidates))


class _Base:
    name = ""
    params: Params

    def __init__(self, seed: int) -> None:
        self.rng = np.random.Generator(np.random.PCG64(seed))

    def report(
        self, sender: str, *, utility: float | None = None, duration: float | None = None
    ) -> None:
        return None

    def _extra_state(self) -> dict[str, Any]:
        return {}

    def _load_extra(self, state: dict[str, Any]) -> None:
        return None

    def state(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "params": self.params.model_dump(),
            "rng": _rng_state(self.rng),
            **self._extra_state(),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        if state.get("name") != self.name:
            raise ConfigError(
                f"selector state was written by {state.get('name')!r}; this job selects "
                f"with {self.name!r}"
            )
        _set_rng_state(self.rng, state.get("rng", {}))
        self._load_extra(state)

    def _pick(self, pool: list[str], k: int) -> list[str]:
        """``k`` of ``pool`` uniformly without replacement, returned sorted."""
        if k >= len(pool):
            return list(pool)
        idx = self.rng.choice(len(pool), size=k, replace=False)
        return sorted(pool[i] for i in idx)


# --- all / random / fraction ------------------------------------------------------------------


class AllSelector(_Base):
    name = "all"

    def __init__(self, params: AllParams, seed: int) -> None:
        super().__init__(seed)
        self.params = params

    def select(self, candidates: Sequence[str], rnd: int) -> list[str]:
        return _unique_sorted(candidates)


class RandomSelector(_Base):
    name = "random"

    def __init__(self, params: RandomParams, seed: int) -> None:
        super().__init__(seed)
        self.k = params.k
        self.params = params

    def select(self, candidates: Sequence[str], rnd: int) -> list[str]:
        return self._pick(_unique_sorted(candidates), self.k)


class FractionSelector(_Base):
    name = "fraction"

    def __init__(self, params: FractionParams, seed: int) -> None:
        super().__init__(seed)
        self.fraction = params.f
        self.params = params

    def select(self, candidates: Sequence[str], rnd: int) -> list[str]:
        pool = _unique_sorted(candidates)
        if not pool:
            return []
        k = max(1, math.floor(self.fraction * len(pool) + 1e-9))
        return self._pick(pool, k)


# --- fedbuff ----------------------------------------------------------------------------------


class FedBuffSelector(_Base):
    name = "fedbuff"

    def __init__(self, params: FedBuffSelectorParams, seed: int) -> None:
        super().__init__(seed)
        self.concurrency = params.c
        self.params = params
        self.in_flight: set[str] = set()

    def select(self, candidates: Sequence[str], rnd: int) -> list[str]:
        """New trainers to start now (none in flight twice, never more than ``c`` in flight)."""
        pool = _unique_sorted(candidates)
        self.in_flight &= set(pool)
        idle = [t for t in pool if t not in self.in_flight]
        slots = self.concurrency - len(self.in_flight)
        chosen = self._pick(idle, max(0, slots))
        self.in_flight.update(chosen)
        return chosen

    def report(
        self, sender: str, *, utility: float | None = None, duration: float | None = None
    ) -> None:
        self.in_flight.discard(sender)

    def _extra_state(self) -> dict[str, Any]:
        return {"in_flight": sorted(self.in_flight)}

    def _load_extra(self, state: dict[str, Any]) -> None:
        self.in_flight = {str(t) for t in state.get("in_flight", [])}


# --- oort -------------------------------------------------------------------------------------


class OortSelector(_Base):
    name = "oort"

    def __init__(self, params: OortParams, seed: int) -> None:
        super().__init__(seed)
        self.oort = params
        self.params = params
        self.epsilon = params.epsilon
        self.utility: dict[str, float] = {}
        self.duration: dict[str, float] = {}
        self.last_round: dict[str, int] = {}

    def report(
        self, sender: str, *, utility: float | None = None, duration: float | None = None
    ) -> None:
        if utility is not None:
            if not math.isfinite(utility):  # any finite value: scores are min-max normalised
                raise ConfigError(f"oort: utility of {sender!r} must be finite")
            self.utility[sender] = float(utility)
        if duration is not None:
            if not math.isfinite(duration) or duration < 0:
                raise ConfigError(f"oort: duration of {sender!r} must be finite and >= 0")
            self.duration[sender] = float(duration)

    def preferred(self) -> float | None:
        if self.oort.preferred_duration is not None:
            return self.oort.preferred_duration
        if not self.duration:
            return None
        return float(np.percentile(list(self.duration.values()), self.oort.duration_percentile))

    def scores(self, trainers: Sequence[str], rnd: int) -> dict[str, float]:
        """Exploitation score of each explored trainer (higher is better)."""
        if not trainers:
            return {}
        raw = np.array([self.utility[t] for t in trainers], dtype=np.float64)
        lo, hi = float(raw.min()), float(raw.max())
        norm = (raw - lo) / (hi - lo) if hi > lo else np.ones_like(raw)
        t_pref = self.preferred()
        out: dict[str, float] = {}
        for t, u in zip(trainers, norm, strict=True):
            score = float(u)
            last = self.last_round.get(t)
            if last is not None and self.oort.staleness_bonus > 0:
                score += math.sqrt(self.oort.staleness_bonus * math.log(rnd + 1) / (last + 1))
            took = self.duration.get(t)
            if t_pref is not None and took is not None and took > t_pref:
                score *= (t_pref / took) ** self.oort.alpha
            out[t] = score
        return out

    def _weighted_pick(self, pool: list[str], weights: np.ndarray, k: int) -> list[str]:
        if k >= len(pool):
            return list(pool)
        total = float(weights.sum())
        p = weights / total if total > 0 else None
        idx = self.rng.choice(len(pool), size=k, replace=False, p=p)
        return [pool[i] for i in idx]

    def select(self, candidates: Sequence[str], rnd: int) -> list[str]:
        pool = _unique_sorted(candidates)
        k = min(self.oort.k, len(pool))
        explored = [t for t in pool if t in self.utility]
        unexplored = [t for t in pool if t not in self.utility]
        n_explore = min(len(unexplored), round(self.epsilon * k))
        n_exploit = min(len(explored), k - n_explore)
        n_explore = min(len(unexplored), k - n_exploit)  # fill from the other side if short
        chosen: list[str] = []
        if n_exploit:
            scores = self.scores(explored, rnd)
            ranked = sorted(explored, key=lambda t: (-scores[t], t))
            threshold = self.oort.cutoff * scores[ranked[n_exploit - 1]]
            eligible = [t for t in ranked if scores[t] >= threshold]
            weights = np.array([scores[t] for t in eligible], dtype=np.float64)
            chosen += self._weighted_pick(eligible, weights, n_exploit)
        if n_explore:
            chosen += self._pick(unexplored, n_explore)
        self.epsilon = max(self.oort.epsilon_min, self.epsilon * self.oort.epsilon_decay)
        for t in chosen:
            self.last_round[t] = rnd
        return sorted(chosen)

    def _extra_state(self) -> dict[str, Any]:
        return {
            "epsilon": self.epsilon,
            "utility": dict(sorted(self.utility.items())),
            "duration": dict(sorted(self.duration.items())),
            "last_round": dict(sorted(self.last_round.items())),
        }

    def _load_extra(self, state: dict[str, Any]) -> None:
        try:
            self.epsilon = float(state["epsilon"])
            self.utility = {str(k): float(v) for k, v in state.get("utility", {}).items()}
            self.duration = {str(k): float(v) for k, v in state.get("duration", {}).items()}
            self.last_round = {str(k): int(v) for k, v in state.get("last_round", {}).items()}
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ConfigError(f"oort: invalid selector state: {exc}") from exc


IMPLEMENTATIONS: dict[str, Callable[[Any, int], Selector]] = {
    "all": AllSelector,
    "random": RandomSelector,
    "fraction": FractionSelector,
    "fedbuff": FedBuffSelector,
    "oort": OortSelector,
}


def selector_names() -> list[str]:
    return sorted(IMPLEMENTATIONS)


def make_selector(spec: SelectorSpec, seed: int) -> Selector:
    """Build selector ``spec.name`` with its (already validated) ``spec.kwargs``."""
    factory = IMPLEMENTATIONS.get(spec.name)
    if factory is None:  # flame_spec knows a selector this SDK does not implement
        raise ConfigError(f"selector {spec.name!r} is not implemented by this SDK")
    return factory(spec.params(), seed)
