"""Digits trainer: logistic regression (hidden = 0) or a small MLP in torch, plain SGD."""

from __future__ import annotations

import torch
from torch import nn

from flame import Trainer
from flame.datasets import load_shard

torch.set_num_threads(1)  # tiny model, many trainers per process: threads only contend


def build_model(hidden: int) -> nn.Module:
    torch.manual_seed(0)
    if hidden > 0:
        return nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))
    return nn.Linear(64, 10)


class DigitsTrainer(Trainer):
    def initialize(self) -> None:
        self.model = build_model(int(self.hyperparameters.get("hidden", 0)))

    def load_data(self) -> None:
        shard = load_shard(self.config.dataset.uri)
        self.x, self.y = torch.from_numpy(shard.x_train), torch.from_numpy(shard.y_train)
        self.x_test, self.y_test = torch.from_numpy(shard.x_test), torch.from_numpy(shard.y_test)
        self.dataset_size, self.eval_size = len(self.y), len(self.y_test)

    def train(self) -> None:
        hp = self.hyperparameters
        opt = torch.optim.SGD(self.model.parameters(), lr=float(hp.get("lr", 0.1)))
        batch = int(hp.get("batch_size", 16))
        # seeded per (job seed, round, task): a rerun or a resumed job trains identically
        gen = torch.Generator().manual_seed(
            self.config.job.seed * 1_000_003 + self.round * 1_009 + self.config.index
        )
        self.model.train()
        for _ in range(int(hp.get("epochs", 1))):
            order = torch.randperm(len(self.y), generator=gen)
            for i in range(0, len(order), batch):
                idx = order[i : i + batch]
                opt.zero_grad()
                loss = nn.functional.cross_entropy(self.model(self.x[idx]), self.y[idx])
                loss.backward()
                opt.step()

    def evaluate(self) -> dict[str, float]:
        self.model.eval()
        with torch.no_grad():
            logits = self.model(self.x_test)
            loss = nn.functional.cross_entropy(logits, self.y_test).item()
            acc = (logits.argmax(1) == self.y_test).float().mean().item()
        return {"accuracy": acc, "loss": loss}
