"""A feature party of the split digits model: a bottom MLP over its own 32 pixel columns."""

from __future__ import annotations

import torch
from torch import nn

from flame.datasets import load_vertical
from flame.roles.vertical import FeatureParty

torch.set_num_threads(1)


def build_bottom(width: int, hidden: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(width, hidden), nn.ReLU())


class DigitsFeatureParty(FeatureParty):
    def load_data(self) -> None:
        part = load_vertical(self.config.dataset.uri)
        self.ids, self.x = part.ids, part.x

    def initialize(self) -> None:
        seed = self.config.job.seed * 1000 + self.config.index
        self.model = build_bottom(self.width, int(self.hyperparameters["hidden"]), seed)
