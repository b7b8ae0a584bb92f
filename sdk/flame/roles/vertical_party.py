"""What both kinds of vertical party share (:mod:`flame.roles.vertical`): the checks on a
party's own data, aligning rows to the private intersection, the seeded splits and batch orders
every party computes alike, and the round counter."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from flame.composer import tasklet
from flame.errors import ConfigError
from flame.psi import canonical_ids
from flame.roles.base import Role


def split_rows(n: int, seed: int, test_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) positions in the sorted intersection; the same at every party."""
    order = np.random.default_rng([seed, 7]).permutation(n)
    n_test = round(n * test_fraction)
    return np.sort(order[n_test:]), np.sort(order[:n_test])


def batch_order(n: int, seed: int, rnd: int) -> np.ndarray:
    """The shared order of the training split in round ``rnd``."""
    return np.random.default_rng([seed, rnd]).permutation(n)


@dataclass(frozen=True)
class TopStep:
    """What the label party's top model gives for one batch."""

    loss: float
    predictions: np.ndarray
    gradients: list[np.ndarray] | None = None  # one per feature party (training only)


class VerticalParty(Role):
    """What both kinds of party share: data checks, alignment, the round counter."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        job = self.config.job
        if job.kind != "vertical":
            raise ConfigError(
                f"{type(self).__name__} runs in jobs of kind 'vertical', not {job.kind!r}"
            )
        hp = job.hyperparameters
        self.batch_size = int(hp.get("batch_size", 64))
        self.min_samples = int(hp.get("min_samples", 1))
        self.test_fraction = float(hp.get("test_fraction", 0.2))
        if not 0 <= self.test_fraction < 1:
            raise ConfigError(
                f"hyperparameters.test_fraction {self.test_fraction} is not in [0, 1)"
            )
        self.ids: Sequence[Any] = []
        self.intersection: list[bytes] = []
        self.rows = np.zeros(0, dtype=np.int64)  # local row of each intersection id
        self.train_rows = np.zeros(0, dtype=np.int64)
        self.test_rows = np.zeros(0, dtype=np.int64)
        self.final = False
        self._canonical: list[bytes] = []

    @property
    def dataset_label(self) -> str:
        ds = self.config.dataset
        return ds.name if ds is not None else self.config.task_id

    def check_ids(self, n_rows: int) -> None:
        """The checks every party makes on its own data before it sends anything."""
        where = f"dataset {self.dataset_label!r}"
        if len(self.ids) == 0:
            raise ConfigError(f"{where} has no sample ids: nothing to intersect")
        if len(self.ids) != n_rows:
            raise ConfigError(f"{where} has {len(self.ids)} ids for {n_rows} rows")
        if len(self.ids) < self.min_samples:
            raise ConfigError(
                f"{where} has {len(self.ids)} samples; the job needs at least "
                f"min_samples={self.min_samples}"
            )
        self._canonical = canonical_ids(self.ids)

    def align(self, intersection: list[bytes]) -> None:
        if len(intersection) < self.min_samples:
            raise ConfigError(
                f"the parties have {len(intersection)} samples in common; the job needs at "
                f"least min_samples={self.min_samples}"
            )
        where = {v: i for i, v in enumerate(self._canonical)}
        self.intersection = intersection
        self.rows = np.array([where[v] for v in intersection], dtype=np.int64)
        train, test = split_rows(len(intersection), self.config.job.seed, self.test_fraction)
        self.train_rows, self.test_rows = self.rows[train], self.rows[test]
        self.log.info("psi.done", intersection=len(intersection), train=len(train), test=len(test))

    def done(self) -> bool:
        return self.finished

    @tasklet
    def begin_round(self) -> None:
        self.round += 1
        self.final = self.round > self.config.job.rounds

    def batches(self, rows: np.ndarray, shuffle: bool) -> list[np.ndarray]:
        order = batch_order(len(rows), self.config.job.seed, self.round) if shuffle else None
        picked = rows[order] if order is not None else rows
        size = self.batch_size if shuffle else max(self.batch_size, 1024)
        return [picked[i : i + size] for i in range(0, len(picked), size)]


def f32(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32)


def torch_module(model: Any, what: str) -> Any:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is optional
        raise ConfigError(f"override {what} for a model that is not a torch module") from None
    if not isinstance(model, torch.nn.Module):
        raise ConfigError(f"override {what} for a model that is not a torch module")
    return model
