"""Expand a design + job spec into one :class:`TaskConfig` per task (used by ``flame.simulate``).

The rules are the controller job builder's (``flame_controller.jobs.builder``; a contract test
checks both give the same task graph):

* Exactly one data-consumer role. ``spec.datasets`` maps group -> dataset names; for each group g
  (spec order) and dataset d (list order) one task of that role whose groups are the role's
  ``groupAssociation`` entry containing g (none -> :class:`ConfigError` naming the group).
* Every other role: for each ``groupAssociation`` entry (a role with none gets one task with no
  groups) ``replica`` tasks with that entry as groups.
* Indexes count per role from 0 in that order. Task id:
  ``f"{role}-{index}-" + sha256(f"{job_id}/{role}/{index}").hexdigest()[:10]``.
* Peers of task t on channel c (pair (a, b)), group g = t.groups[c]: every task of the other end's
  role (every OTHER task of the role when a == b) whose groups[c] == g.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

from flame.config import (
    ChannelMembership,
    DatasetRef,
    DesignSchema,
    DiscoverySettings,
    JobSpec,
    MqttSettings,
    PeerRef,
    TaskConfig,
)
from flame.errors import ConfigError


def task_id(job_id: str, role: str, index: int) -> str:
    digest = hashlib.sha256(f"{job_id}/{role}/{index}".encode()).hexdigest()[:10]
    return f"{role}-{index}-{digest}"


@dataclass(frozen=True)
class PlannedTask:
    id: str
    role: str
    index: int
    groups: dict[str, str]
    dataset: str | None  # dataset name for data consumers


def plan_tasks(design: DesignSchema, spec: JobSpec, job_id: str) -> list[PlannedTask]:
    consumers = [r for r in design.roles if r.is_data_consumer]
    if len(consumers) != 1:
        raise ConfigError(f"a design needs exactly one data-consumer role, has {len(consumers)}")
    tasks: list[PlannedTask] = []
    for role in design.roles:
        index = 0
        if role.is_data_consumer:
            for group, names in spec.datasets.items():
                entry = next((a for a in role.group_association if group in a.values()), None)
                if entry is None:
                    raise ConfigError(
                        f"group {group!r} of the job's datasets is in no groupAssociation "
                        f"entry of role {role.name!r}"
                    )
                for name in names:
                    tid = task_id(job_id, role.name, index)
                    tasks.append(PlannedTask(tid, role.name, index, dict(entry), name))
                    index += 1
        else:
            entries = role.group_association or [{}]
            for entry in entries:
                for _ in range(role.replica):
                    tid = task_id(job_id, role.name, index)
                    tasks.append(PlannedTask(tid, role.name, index, dict(entry), None))
                    index += 1
    return tasks


def peers_of(
    task: PlannedTask, channel: str, design: DesignSchema, tasks: list[PlannedTask]
) -> list[PeerRef]:
    chan = design.channel(channel)
    group = task.groups[channel]
    a, b = chan.pair
    other = a if a == b or task.role == b else b
    return [
        PeerRef(task_id=t.id, role=t.role)
        for t in tasks
        if t.role == other and t.id != task.id and t.groups.get(channel) == group
    ]


def expand(
    design: DesignSchema,
    spec: JobSpec,
    datasets: Mapping[str, str],
    *,
    job_id: str,
    job_name: str,
    owner: str = "",
    design_name: str = "",
    workdir: str = ".",
    checkpoint_root: str | None = None,
    mqtt: MqttSettings | None = None,
    discovery: DiscoverySettings | None = None,
) -> list[TaskConfig]:
    """Task configs for every task of the job; ``datasets`` maps dataset name -> local uri."""
    tasks = plan_tasks(design, spec, job_id)
    configs: list[TaskConfig] = []
    for t in tasks:
        channels: dict[str, ChannelMembership] = {}
        for name, group in t.groups.items():
            chan = design.channel(name)
            channels[name] = ChannelMembership(
                name=name,
                group=group,
                backend=spec.backend or chan.backend,
                peers=peers_of(t, name, design, tasks),
                func_tags=list(chan.func_tags.get(t.role, [])),
            )
        dataset = None
        if t.dataset is not None:
            if t.dataset not in datasets:
                raise ConfigError(f"dataset {t.dataset!r} has no uri (known: {sorted(datasets)})")
            dataset = DatasetRef(id=t.dataset, name=t.dataset, uri=datasets[t.dataset])
        configs.append(
            TaskConfig(
                job_id=job_id,
                job_name=job_name,
                task_id=t.id,
                role=t.role,
                index=t.index,
                owner=owner,
                design_name=design_name,
                design=design,
                job=spec,
                channels=channels,
                dataset=dataset,
                mqtt=mqtt or MqttSettings(),
                discovery=discovery or DiscoverySettings(),
                workdir=workdir,
                checkpoint_dir=(f"{checkpoint_root}/{t.id}" if checkpoint_root else None),
            )
        )
    return configs
