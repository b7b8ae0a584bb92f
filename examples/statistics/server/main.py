"""The statistics server: asks the sites, combines their answers, publishes the result."""

from __future__ import annotations

from flame.roles.statistics import StatisticsServer


class DigitsStatistics(StatisticsServer):
    """Nothing to override: the job's hyperparameters say what to compute."""
