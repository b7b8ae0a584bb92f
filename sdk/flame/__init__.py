"""Flame data plane: compose roles, run them locally (``flame.simulate``) or under the control
plane (``python -m flame.launch config.json``).

    import flame

    class MyTrainer(flame.Trainer):
        def initialize(self): self.model = ...        # torch.nn.Module or dict of arrays
        def load_data(self): ...                       # from self.config.dataset.uri
        def train(self): ...
        def evaluate(self): return {"accuracy": ...}

    result = flame.simulate("examples/central")
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flame.composer import Loop, Tasklet, tasklet
from flame.config import DesignSchema, JobSpec, TaskConfig
from flame.errors import (
    ChannelError,
    ConfigError,
    FlameError,
    PeerTimeout,
    QuorumLost,
    RejectedUpdate,
)

if TYPE_CHECKING:
    from flame.roles import Aggregator, Coordinator, Role, Trainer
    from flame.simulate import SimulationResult, simulate

__all__ = [
    "Aggregator",
    "ChannelError",
    "ConfigError",
    "Coordinator",
    "DesignSchema",
    "FlameError",
    "JobSpec",
    "Loop",
    "PeerTimeout",
    "QuorumLost",
    "RejectedUpdate",
    "Role",
    "SimulationResult",
    "TaskConfig",
    "Tasklet",
    "Trainer",
    "simulate",
    "tasklet",
]

_LAZY = {
    "Aggregator": "flame.roles",
    "Coordinator": "flame.roles",
    "Role": "flame.roles",
    "Trainer": "flame.roles",
    "SimulationResult": "flame.simulate",
    "simulate": "flame.simulate",
}


def __getattr__(name: str) -> Any:
    """Roles and simulation load on first use, so ``import flame`` stays light."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'flame' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
