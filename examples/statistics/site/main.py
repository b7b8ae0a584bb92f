"""A statistics site: the 64 pixel intensities of its digits shard (train and test rows)."""

from __future__ import annotations

import numpy as np

from flame.datasets import load_shard
from flame.roles.statistics import StatisticsSite


class DigitsSite(StatisticsSite):
    def load_data(self) -> None:
        shard = load_shard(self.config.dataset.uri)
        self.table = np.concatenate([shard.x_train, shard.x_test])
        self.feature_names = [f"pixel-{r}-{c}" for r in range(8) for c in range(8)]
