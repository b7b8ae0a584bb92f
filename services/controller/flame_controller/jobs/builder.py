"""The job builder: a design and a job spec become the tasks of one job.

The rules are :mod:`flame_spec.plan`'s (the SDK's ``flame.simulate`` expands jobs with the same
code); this module adds what only the control plane knows: the registered datasets and their
nodes, the apiserver's URL for data-plane discovery and the tracking server, and it turns spec
errors into :class:`InvalidArgument` (a 400 naming the field).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flame_service.errors import InvalidArgument
from flame_spec import (
    DatasetInfo,
    DesignSchema,
    DiscoverySettings,
    JobSpec,
    SpecError,
    dump,
    plan_tasks,
    task_configs,
)
from flame_spec import (
    parse_design as _parse_design,
)
from flame_spec import (
    parse_job_spec as _parse_job_spec,
)

__all__ = ["DatasetInfo", "PlannedTask", "build_tasks", "parse_design", "parse_job_spec"]


@dataclass(frozen=True)
class PlannedTask:
    id: str
    role: str
    index: int
    node_id: str | None
    dataset_id: str | None
    groups: dict[str, str]
    data_consumer: bool
    config: dict[str, Any]  # a TaskConfig as stored (JSON-safe)


def parse_design(value: Any) -> DesignSchema:
    """Validate a design schema; :class:`InvalidArgument` says what is wrong and where."""
    try:
        return _parse_design(value)
    except SpecError as exc:
        raise InvalidArgument(str(exc)) from None


def parse_job_spec(value: Any) -> JobSpec:
    """Validate a job spec; :class:`InvalidArgument` says what is wrong and where."""
    try:
        return _parse_job_spec(value)
    except SpecError as exc:
        raise InvalidArgument(str(exc)) from None


def build_tasks(
    *,
    job_id: str,
    job_name: str,
    owner: str,
    design_name: str,
    design: DesignSchema,
    spec: JobSpec,
    datasets: Mapping[str, DatasetInfo],
    apiserver_url: str | None = None,
    tracking_uri: str | None = None,
) -> list[PlannedTask]:
    """Expand one job into its tasks (see :mod:`flame_spec.plan` for the rules)."""
    discovery = (
        DiscoverySettings(kind="control-plane", url=apiserver_url)
        if apiserver_url
        else DiscoverySettings()
    )
    try:
        planned = plan_tasks(design, spec, job_id, datasets)
        configs = task_configs(
            design,
            spec,
            planned,
            job_id=job_id,
            job_name=job_name,
            owner=owner,
            design_name=design_name,
            discovery=discovery,
            tracking_uri=tracking_uri,
        )
    except SpecError as exc:
        raise InvalidArgument(str(exc)) from None
    return [
        PlannedTask(
            id=t.id,
            role=t.role,
            index=t.index,
            node_id=t.node_id,
            dataset_id=t.dataset.id if t.dataset else None,
            groups=dict(t.groups),
            data_consumer=t.data_consumer,
            config=dump(config),
        )
        for t, config in zip(planned, configs, strict=True)
    ]
