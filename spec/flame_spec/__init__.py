"""flame_spec: the contracts the SDK and the control plane share (pydantic only, no I/O).

- :mod:`flame_spec.design`: the design schema (roles, channels).
- :mod:`flame_spec.resources`: compute resources of a role (containers).
- :mod:`flame_spec.job`: the job spec (rounds, datasets, rule, selector, tracking, bounds).
- :mod:`flame_spec.rules`: names and keyword models of every aggregation rule and selector.
- :mod:`flame_spec.task`: the task config every task runs from.
- :mod:`flame_spec.plan`: task expansion (design + spec -> tasks and their configs).
- :mod:`flame_spec.parse`: untrusted input -> models, errors naming the field.
"""

from flame_spec.design import Backend, ChannelSpec, DesignSchema, GroupBy, RoleSpec
from flame_spec.errors import SpecError
from flame_spec.job import JobSpec, OptimizerSpec, SelectorSpec, TrackingSpec
from flame_spec.parse import (
    dump,
    parse_design,
    parse_design_json,
    parse_job_spec,
    parse_job_spec_json,
)
from flame_spec.plan import DatasetInfo, PlannedTask, plan_tasks, task_configs, task_id
from flame_spec.resources import ResourceAmounts, RoleResources
from flame_spec.task import (
    ChannelMembership,
    DatasetRef,
    DiscoverySettings,
    MqttSettings,
    PeerRef,
    SigningSettings,
    TaskConfig,
    TlsSettings,
)

__all__ = [
    "Backend",
    "ChannelMembership",
    "ChannelSpec",
    "DatasetInfo",
    "DatasetRef",
    "DesignSchema",
    "DiscoverySettings",
    "GroupBy",
    "JobSpec",
    "MqttSettings",
    "OptimizerSpec",
    "PeerRef",
    "PlannedTask",
    "ResourceAmounts",
    "RoleResources",
    "RoleSpec",
    "SelectorSpec",
    "SigningSettings",
    "SpecError",
    "TaskConfig",
    "TlsSettings",
    "TrackingSpec",
    "dump",
    "parse_design",
    "parse_design_json",
    "parse_job_spec",
    "parse_job_spec_json",
    "plan_tasks",
    "task_configs",
    "task_id",
]
