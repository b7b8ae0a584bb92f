"""The global model starts at zeros; ``evaluate`` gives the training loss of the global model
over every device's training data (logged as ``server/loss``), as the FedProx paper plots it:
in a simulation the server can load the synthetic devices (``hyperparameters.eval_data``)."""

from __future__ import annotations

import numpy as np

from flame import Aggregator
from flame.datasets import load_shard


class SyntheticAggregator(Aggregator):
    def initialize(self) -> None:
        self.model = {"w": np.zeros((60, 10)), "b": np.zeros(10)}
        base, _, count = str(self.hyperparameters["eval_data"]).rpartition("/")
        shards = [load_shard(f"{base}/{count}/{i}") for i in range(int(count))]
        self.x = np.concatenate([s.x_train for s in shards]).astype(np.float64)
        self.y = np.concatenate([s.y_train for s in shards])

    def evaluate(self) -> dict[str, float]:
        z = self.x @ self.model["w"] + self.model["b"]
        z -= z.max(axis=1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        loss = float(-logp[np.arange(len(self.y)), self.y].mean())
        return {"loss": loss, "accuracy": float((z.argmax(1) == self.y).mean())}
