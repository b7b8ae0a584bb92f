"""Digits trainer in plain NumPy: softmax regression, full-batch gradient descent.

Deterministic (no sampling), so reruns, resumed jobs and different backends give bit-identical
models. The model is a dict of float32 arrays, which Flame moves as is.
"""

from __future__ import annotations

import numpy as np

from flame import Trainer
from flame.datasets import load_shard

CLASSES = 10


def init_model(features: int = 64) -> dict[str, np.ndarray]:
    return {
        "w": np.zeros((features, CLASSES), dtype=np.float32),
        "b": np.zeros(CLASSES, dtype=np.float32),
    }


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class NumpyDigitsTrainer(Trainer):
    def initialize(self) -> None:
        self.model = init_model()

    def load_data(self) -> None:
        shard = load_shard(self.config.dataset.uri)
        self.x, self.y = shard.x_train.astype(np.float64), shard.y_train
        self.x_test, self.y_test = shard.x_test.astype(np.float64), shard.y_test
        self.dataset_size, self.eval_size = len(self.y), len(self.y_test)

    def train(self) -> None:
        lr = float(self.hyperparameters.get("lr", 1.0))
        steps = int(self.hyperparameters.get("local_steps", 5))
        w = self.model["w"].astype(np.float64)
        b = self.model["b"].astype(np.float64)
        onehot = np.eye(CLASSES)[self.y]
        for _ in range(steps):
            grad = (softmax(self.x @ w + b) - onehot) / len(self.y)
            w -= lr * (self.x.T @ grad)
            b -= lr * grad.sum(axis=0)
        self.model = {"w": w.astype(np.float32), "b": b.astype(np.float32)}

    def evaluate(self) -> dict[str, float]:
        if len(self.y_test) == 0:
            return {}
        p = softmax(self.x_test @ self.model["w"].astype(np.float64) + self.model["b"])
        loss = -np.log(p[np.arange(len(self.y_test)), self.y_test] + 1e-12).mean()
        return {"accuracy": float((p.argmax(1) == self.y_test).mean()), "loss": float(loss)}
