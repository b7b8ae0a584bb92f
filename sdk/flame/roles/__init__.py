"""Roles a task plays: :class:`Trainer`, :class:`Aggregator` (top or middle, decided by the
task's channels), :class:`Coordinator`. User code subclasses one of them."""

from __future__ import annotations

from flame.roles.aggregator import Aggregator
from flame.roles.base import Role, RoleResult
from flame.roles.coordinator import Coordinator
from flame.roles.loader import load_role_class, make_role
from flame.roles.trainer import Trainer

__all__ = [
    "Aggregator",
    "Coordinator",
    "Role",
    "RoleResult",
    "Trainer",
    "load_role_class",
    "make_role",
]
