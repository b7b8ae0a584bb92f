"""Multinomial logistic regression on one device of FedProx's Synthetic(1,1), trained with
minibatch SGD as in the FedProx paper (batch 10, lr 0.01, E local epochs), plus the proximal
term ``mu/2 ||w - w_global||²`` when the job's optimizer is ``fedprox``.

Heterogeneity comes from the round's instructions: a straggler is told to do fewer local
epochs (``self.instructions.local_epochs``), and says how many it did (``report_work``), so
the aggregator weights its partial work by the share done.
"""

from __future__ import annotations

import numpy as np

from flame import Trainer
from flame.aggregation.client import fedprox_mu, proximal_grad
from flame.datasets import load_shard

CLASSES = 10
FEATURES = 60


def init_model() -> dict[str, np.ndarray]:
    return {
        "w": np.zeros((FEATURES, CLASSES), dtype=np.float64),
        "b": np.zeros(CLASSES, dtype=np.float64),
    }


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def loss_and_accuracy(
    model: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray
) -> tuple[float, float]:
    p = softmax(x @ model["w"] + model["b"])
    loss = float(-np.log(p[np.arange(len(y)), y] + 1e-12).mean())
    return loss, float((p.argmax(1) == y).mean())


class SyntheticTrainer(Trainer):
    def initialize(self) -> None:
        self.model = init_model()
        self.rng = np.random.default_rng([self.config.job.seed, self.config.index])

    def load_data(self) -> None:
        shard = load_shard(self.config.dataset.uri)
        self.x, self.y = shard.x_train.astype(np.float64), shard.y_train
        self.dataset_size, self.eval_size = len(self.y), len(self.y)

    def train(self) -> None:
        hp = self.hyperparameters
        full = int(hp.get("local_epochs", 20))
        epochs = self.instructions.local_epochs or full
        lr = self.instructions.lr or float(hp.get("lr", 0.01))
        batch = int(hp.get("batch_size", 10))
        mu = fedprox_mu(self.config.job.optimizer)
        w, b = self.model["w"].copy(), self.model["b"].copy()
        onehot = np.eye(CLASSES)[self.y]
        for _ in range(epochs):
            order = self.rng.permutation(len(self.y))
            for start in range(0, len(order), batch):
                idx = order[start : start + batch]
                grad = (softmax(self.x[idx] @ w + b) - onehot[idx]) / len(idx)
                gw, gb = self.x[idx].T @ grad, grad.sum(axis=0)
                if mu > 0:
                    prox = proximal_grad({"w": w, "b": b}, self.global_weights, mu)
                    gw, gb = gw + prox["w"], gb + prox["b"]
                w -= lr * gw
                b -= lr * gb
        self.model = {"w": w, "b": b}
        self.report_work(epochs, full)

    def evaluate(self) -> dict[str, float]:
        loss, acc = loss_and_accuracy(self.model, self.x, self.y)
        return {"train_loss": loss, "train_accuracy": acc}
