"""Softmax-regression trainer that does the local steps it is told to and logs, every round,
the instructions it received (the log travels to the control plane with the task's id)."""

from __future__ import annotations

import numpy as np

from flame import Trainer
from flame.datasets import load_shard


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


class InstructedTrainer(Trainer):
    def initialize(self) -> None:
        self.model = {
            "w": np.zeros((64, 10), dtype=np.float32),
            "b": np.zeros(10, dtype=np.float32),
        }

    def load_data(self) -> None:
        shard = load_shard(self.config.dataset.uri)
        self.x, self.y = shard.x_train.astype(np.float64), shard.y_train
        self.dataset_size = len(self.y)

    def train(self) -> None:
        ins = self.instructions
        self.log.info("instructions.received", round=self.round, **ins.to_json())
        lr = float(self.hyperparameters.get("lr", 1.0))
        w = self.model["w"].astype(np.float64)
        b = self.model["b"].astype(np.float64)
        onehot = np.eye(10)[self.y]
        for _ in range(ins.local_steps or 1):
            grad = (softmax(self.x @ w + b) - onehot) / len(self.y)
            w -= lr * (self.x.T @ grad)
            b -= lr * grad.sum(axis=0)
        self.model = {"w": w.astype(np.float32), "b": b.astype(np.float32)}
