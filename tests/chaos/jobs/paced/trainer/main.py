"""A trainer whose rounds take `pace` seconds of wall time and next to no CPU.

A chaos test that must keep a job running for a minute sets the job's length in seconds this
way: a job made long by training is many times longer on a slow or loaded machine than on the
one its rounds were counted on. Each round moves the model by the mean of the shard's features,
so the model still depends on every round every trainer took part in.
"""

from __future__ import annotations

import time

import numpy as np

from flame import Trainer
from flame.datasets import load_shard


class PacedTrainer(Trainer):
    def initialize(self) -> None:
        self.model = {"w": np.zeros(64, dtype=np.float32)}

    def load_data(self) -> None:
        shard = load_shard(self.config.dataset.uri)
        self.step = shard.x_train.mean(axis=0).astype(np.float32)
        self.dataset_size = len(shard.y_train)

    def train(self) -> None:
        time.sleep(float(self.hyperparameters.get("pace", 0.5)))
        self.model = {"w": self.model["w"] + self.step}

    def evaluate(self) -> dict[str, float]:
        return {"norm": float(np.linalg.norm(self.model["w"]))}
