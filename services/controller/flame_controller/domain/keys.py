"""A task's config as the task receives it: with the data-plane key of that task and the public
keys of its peers, derived from the control plane's secret (see :mod:`flame_spec.signing`).
The store keeps configs without keys; they are added on the way out, to the deployer or to the
node that runs the task."""

from __future__ import annotations

from typing import Any

from flame_spec import TaskConfig, dump
from flame_spec.signing import JobKeys, with_keys

from .context import Ctx


def keyed(ctx: Ctx, config: TaskConfig) -> TaskConfig:
    if ctx.data_plane_secret is None:
        return config
    return with_keys(config, JobKeys(ctx.data_plane_secret, config.job_id))


def keyed_json(ctx: Ctx, stored: dict[str, Any]) -> dict[str, Any]:
    """:func:`keyed` for a stored config (a JSON object)."""
    out: dict[str, Any] = dump(keyed(ctx, TaskConfig.model_validate(stored, strict=False)))
    return out
