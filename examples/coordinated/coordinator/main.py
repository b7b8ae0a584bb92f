"""Coordinator: deals the trainers to the middle aggregators each round (seeded shuffle)."""

from __future__ import annotations

from flame import Coordinator


class RoundRobinCoordinator(Coordinator):
    pass
