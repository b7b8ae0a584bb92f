"""A feature party of vertical logistic regression on digits: the weights of its 32 columns."""

from __future__ import annotations

from flame.datasets import load_vertical
from flame.roles.vertical_logistic import LogisticFeatureParty


class DigitsLogisticFeatureParty(LogisticFeatureParty):
    def load_data(self) -> None:
        part = load_vertical(self.config.dataset.uri)
        self.ids, self.x = part.ids, part.x
