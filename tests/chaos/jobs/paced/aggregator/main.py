"""The paced job's aggregator: the initial global model is all zeros."""

from __future__ import annotations

import numpy as np

from flame import Aggregator


class ZerosAggregator(Aggregator):
    def initialize(self) -> None:
        self.model = {"w": np.zeros(64, dtype=np.float32)}
