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

import importlib
from typing import TYPE_CHECKING, Any

from flame.errors import (
    ChannelError,
    ConfigError,
    DeclineRound,
    FlameError,
    PeerTimeout,
    QuorumLost,
    RejectedUpdate,
)

if TYPE_CHECKING:
    from flame.composer import Loop, Tasklet, tasklet
    from flame.config import DesignSchema, JobSpec, TaskConfig
    from flame.instructions import Instructions
    from flame.roles import Aggregator, Coordinator, Role, Trainer
    from flame.simulation import SimulationResult, simulate

# Imported on first use, so ``flamectl`` and other light users do not load the roles, numpy
# and the channels (PEP 562).
_LAZY = {
    "Loop": "flame.composer",
    "Tasklet": "flame.composer",
    "tasklet": "flame.composer",
    "DesignSchema": "flame.config",
    "JobSpec": "flame.config",
    "TaskConfig": "flame.config",
    "Instructions": "flame.instructions",
    "Aggregator": "flame.roles",
    "Coordinator": "flame.roles",
    "Role": "flame.roles",
    "Trainer": "flame.roles",
    "SimulationResult": "flame.simulation",
    "simulate": "flame.simulation",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'flame' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "Aggregator",
    "ChannelError",
    "ConfigError",
    "Coordinator",
    "DeclineRound",
    "DesignSchema",
    "FlameError",
    "Instructions",
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
