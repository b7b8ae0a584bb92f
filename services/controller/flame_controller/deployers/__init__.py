"""Deployers start the tasks of roles that own no data (aggregators, coordinators)."""

from .base import Deployer, Deployment, Observed

__all__ = ["Deployer", "Deployment", "Observed"]
