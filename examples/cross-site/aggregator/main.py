"""Digits aggregator: builds the initial global model; the job spec picks the strategy."""

from __future__ import annotations

import torch
from torch import nn

from flame import Aggregator


class DigitsAggregator(Aggregator):
    def initialize(self) -> None:
        torch.manual_seed(0)
        hidden = int(self.hyperparameters.get("hidden", 0))
        if hidden > 0:
            self.model = nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))
        else:
            self.model = nn.Linear(64, 10)
