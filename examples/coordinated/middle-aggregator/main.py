"""Middle aggregator: averages its group's updates and forwards them up (no model of its own)."""

from __future__ import annotations

from flame import Aggregator


class MiddleAggregator(Aggregator):
    pass
