"""Deployers start the tasks of roles that own no data (aggregators, coordinators)."""

from .base import Deployer, Launch, Observed, Output

__all__ = ["Deployer", "Launch", "Observed", "Output"]
