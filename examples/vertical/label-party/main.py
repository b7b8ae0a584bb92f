"""The label party of the split digits model: the labels and a linear top model over the
feature parties' embeddings."""

from __future__ import annotations

import torch
from torch import nn

from flame.datasets import load_vertical
from flame.roles.vertical import LabelParty

torch.set_num_threads(1)


def build_top(inputs: int, classes: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Linear(inputs, classes)


class DigitsLabelParty(LabelParty):
    def load_data(self) -> None:
        part = load_vertical(self.config.dataset.uri)
        self.ids, self.y = part.ids, part.y

    def initialize(self) -> None:
        hidden = int(self.hyperparameters["hidden"])
        self.model = build_top(hidden * len(self.parties), 10, self.config.job.seed * 1000 + 999)
