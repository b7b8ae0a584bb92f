"""Deployers start the tasks of roles that own no data (aggregators, coordinators)."""

from .base import Deployer, Deployment, Observed, Output

__all__ = ["Deployer", "Deployment", "Observed", "Output"]
