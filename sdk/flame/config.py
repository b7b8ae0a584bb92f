"""Typed design, job spec and task config: the models of :mod:`flame_spec`, shared with the
control plane (one schema, imported everywhere), plus the SDK's file loaders.

The control plane writes one :class:`TaskConfig` per task as JSON (``FLAME_TASK_CONFIG`` points at
it); ``flame.simulate`` builds the same objects in memory with the same expansion
(:func:`flame_spec.plan.plan_tasks`).
"""

from __future__ import annotations

from pathlib import Path

from flame.errors import ConfigError
from flame_spec import (
    Backend,
    ChannelMembership,
    ChannelSpec,
    DatasetRef,
    DesignSchema,
    DiscoverySettings,
    GroupBy,
    JobSpec,
    MqttSettings,
    OptimizerSpec,
    PeerRef,
    RoleSpec,
    SelectorSpec,
    SpecError,
    TaskConfig,
    TrackingSpec,
)

__all__ = [
    "Backend",
    "ChannelMembership",
    "ChannelSpec",
    "DatasetRef",
    "DesignSchema",
    "DiscoverySettings",
    "GroupBy",
    "JobSpec",
    "MqttSettings",
    "OptimizerSpec",
    "PeerRef",
    "RoleSpec",
    "SelectorSpec",
    "TaskConfig",
    "TrackingSpec",
    "load_task_config",
]


def load_task_config(path: str | Path) -> TaskConfig:
    """Read a task config file; :class:`ConfigError` says what is wrong with it."""
    try:
        return TaskConfig.parse(Path(path).read_bytes())
    except OSError as exc:
        raise ConfigError(f"cannot read task config {path}: {exc}") from exc
    except SpecError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
