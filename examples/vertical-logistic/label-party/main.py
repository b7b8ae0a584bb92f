"""The label party of vertical logistic regression on digits: the labels and the bias."""

from __future__ import annotations

from flame.datasets import load_vertical
from flame.roles.vertical_logistic import LogisticLabelParty


class DigitsLogisticLabelParty(LogisticLabelParty):
    def load_data(self) -> None:
        part = load_vertical(self.config.dataset.uri)
        self.ids, self.y = part.ids, part.y
