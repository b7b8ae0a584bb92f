"""Seeded models of heterogeneous devices for ``flame.simulate(..., heterogeneity=...)``:
which trainers are available in a round and which are stragglers, so heterogeneity
experiments (FedProx's 0/50/90 % stragglers) need no custom trainer code.

    flame.simulate(job, heterogeneity=Heterogeneity(stragglers=0.9, seed=1))

Each (trainer, round) gets its own draw from a generator seeded by ``(seed, trainer index,
round)``, so a run is reproducible whatever order tasks run in. Per round, a trainer:

* is unavailable with probability ``1 - availability`` (its own ``availability`` when
  ``per_trainer`` maps its index to one): it declines the round ("unavailable");
* else is a straggler with probability ``stragglers``: it does a random number of local epochs,
  uniformly 1 .. E - 1 of the round's E (FedProx, Li et al. 2020, §5.2), given to ``train()``
  as ``self.instructions.local_epochs`` and reported as partial work (``steps`` = epochs done
  of ``planned_steps`` = E); with ``drop_stragglers`` it declines instead, as FedAvg drops
  stragglers.

E is ``epochs`` when given, else the job's ``hyperparameters["local_epochs"]`` or ``["epochs"]``,
else 1 (with E = 1 a straggler does nothing and declines).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from flame.errors import ConfigError


@dataclass(frozen=True)
class RoundPlan:
    """What a simulated device does in one round."""

    decline: str | None = None  # the reason it sits the round out
    local_epochs: int | None = None  # a straggler's epochs (None: the whole round's work)
    planned_epochs: int = 1


@dataclass(frozen=True)
class Heterogeneity:
    availability: float = 1.0
    stragglers: float = 0.0
    drop_stragglers: bool = False
    epochs: int | None = None
    seed: int = 0
    per_trainer: Mapping[int, float] = field(default_factory=dict)  # index -> availability

    def __post_init__(self) -> None:
        for name, p in [("availability", self.availability), ("stragglers", self.stragglers)]:
            if not 0.0 <= p <= 1.0:
                raise ConfigError(f"heterogeneity: {name} {p!r} is not a probability")
        for index, p in self.per_trainer.items():
            if not 0.0 <= p <= 1.0:
                raise ConfigError(f"heterogeneity: availability {p!r} of trainer {index}")
        if self.epochs is not None and self.epochs < 1:
            raise ConfigError(f"heterogeneity: epochs {self.epochs!r} is not at least 1")

    def full_epochs(self, hyperparameters: Mapping[str, Any]) -> int:
        if self.epochs is not None:
            return self.epochs
        value = hyperparameters.get("local_epochs", hyperparameters.get("epochs", 1))
        return max(int(value), 1)

    def plan(self, index: int, rnd: int, hyperparameters: Mapping[str, Any]) -> RoundPlan:
        """Trainer ``index``'s behaviour in round ``rnd`` (deterministic)."""
        full = self.full_epochs(hyperparameters)
        rng = np.random.default_rng([self.seed, index, rnd])
        available = self.per_trainer.get(index, self.availability)
        if rng.random() >= available:
            return RoundPlan(decline="unavailable (simulated)", planned_epochs=full)
        if rng.random() >= self.stragglers:
            return RoundPlan(planned_epochs=full)
        if self.drop_stragglers or full <= 1:
            return RoundPlan(decline="straggler (simulated)", planned_epochs=full)
        return RoundPlan(local_epochs=int(rng.integers(1, full)), planned_epochs=full)
