"""SCAFFOLD client in NumPy: softmax regression, full-batch gradient steps corrected by the
control variates; the trainer's own variate lives in its process from round to round, so a
round trained twice would move it twice."""

from __future__ import annotations

import numpy as np

from flame import Trainer
from flame.aggregation.client import scaffold_control_update, scaffold_correction
from flame.datasets import load_shard


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


class ScaffoldTrainer(Trainer):
    def initialize(self) -> None:
        self.model = {
            "w": np.zeros((64, 10), dtype=np.float32),
            "b": np.zeros(10, dtype=np.float32),
        }
        self.c_i: dict[str, np.ndarray] = {}

    def load_data(self) -> None:
        shard = load_shard(self.config.dataset.uri)
        self.x, self.y = shard.x_train.astype(np.float64), shard.y_train
        self.x_test, self.y_test = shard.x_test.astype(np.float64), shard.y_test
        self.dataset_size, self.eval_size = len(self.y), len(self.y_test)

    def train(self) -> None:
        lr = float(self.hyperparameters.get("lr", 1.0))
        steps = int(self.hyperparameters.get("local_steps", 5))
        onehot = np.eye(10)[self.y]
        w = {k: v.astype(np.float64) for k, v in self.model.items()}
        for _ in range(steps):
            g = (softmax(self.x @ w["w"] + w["b"]) - onehot) / len(self.y)
            grads = scaffold_correction({"w": self.x.T @ g, "b": g.sum(0)}, self.extras, self.c_i)
            w = {k: w[k] - lr * grads[k] for k in w}
        self.model = {k: v.astype(np.float32) for k, v in w.items()}
        self.c_i, self.update_extras = scaffold_control_update(
            self.c_i, self.extras, self.global_weights, self.model, steps, lr
        )

    def evaluate(self) -> dict[str, float]:
        if len(self.y_test) == 0:
            return {}
        p = softmax(self.x_test @ self.model["w"].astype(np.float64) + self.model["b"])
        loss = -np.log(p[np.arange(len(self.y_test)), self.y_test] + 1e-12).mean()
        return {"accuracy": float((p.argmax(1) == self.y_test).mean()), "loss": float(loss)}
