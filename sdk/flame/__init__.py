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
from flame.roles import Aggregator, Coordinator, Role, Trainer

# ``flame.simulate`` is the function (imported last: the submodule of the same name would
# otherwise shadow it as a package attribute).
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
