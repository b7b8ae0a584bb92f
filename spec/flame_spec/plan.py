"""Task expansion: a design and a job spec become the tasks of one job (the job builder).

The control plane and ``flame.simulate`` both expand a job here, so a job has the same task
graph wherever it runs.

1. The design has exactly one data-consumer role (``isDataConsumer: true``). ``spec.datasets``
   maps a *group* to a list of dataset ids or names, resolved through the ``datasets`` mapping
   (keyed by id; a name must match exactly one dataset; ``datasets=None`` takes every reference
   as the name of a dataset). For every group ``g`` (spec order) and every dataset ``d`` (list
   order) there is one task of the data-consumer role. Its ``groups`` is the role's
   ``groupAssociation`` entry that has ``g`` among its values (no entry, or more than one, is an
   error naming the group); its node is the dataset's node. A dataset feeds one task per job, and
   the job needs at least ``spec.min_trainers`` data-consumer tasks (and as many as its rule needs).
2. Every other role gets, for each of its ``groupAssociation`` entries (in order), ``replica``
   tasks whose ``groups`` is that entry; a role without entries gets ``replica`` tasks with empty
   groups. These tasks have no node: a deployer runs them.
3. Indexes count per role from 0 in that order. The task id is deterministic and a DNS label:
   ``f"{role[:40]}-{index}-{sha256(job/role/index)[:10]}"``.
4. Peers: a task ``t`` is on channel ``c`` when ``c`` is in ``t.groups``; with ``g = t.groups[c]``
   its peers are every task of the other end's role whose ``groups[c] == g`` (for a channel whose
   two ends are the same role: every *other* task of that role in ``g``). A task on a channel
   between two different roles with no peer there is an error (it would wait forever).
5. :func:`task_configs` turns the plan into one :class:`TaskConfig` per task (``spec.backend``
   overrides each channel's backend).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field

from flame_spec.design import DesignSchema, RoleSpec
from flame_spec.errors import SpecError
from flame_spec.job import JobSpec
from flame_spec.task import (
    ChannelMembership,
    DatasetRef,
    DiscoverySettings,
    MqttSettings,
    PeerRef,
    TaskConfig,
)


@dataclass(frozen=True)
class DatasetInfo:
    """What the builder needs to know about a registered dataset."""

    id: str
    name: str
    node_id: str | None = None
    format: str = ""


@dataclass(frozen=True)
class PlannedTask:
    id: str
    role: str
    index: int
    groups: dict[str, str]
    dataset: DatasetInfo | None = None
    peers: dict[str, list[PeerRef]] = field(default_factory=dict)  # channel -> other ends

    @property
    def data_consumer(self) -> bool:
        return self.dataset is not None

    @property
    def node_id(self) -> str | None:
        return self.dataset.node_id if self.dataset is not None else None


def task_id(job_id: str, role: str, index: int) -> str:
    """Deterministic, DNS-safe task id (≤ 56 characters)."""
    digest = hashlib.sha256(f"{job_id}/{role}/{index}".encode()).hexdigest()[:10]
    return f"{role[:40].rstrip('-')}-{index}-{digest}"


def _fail(field_name: str, message: str) -> SpecError:
    return SpecError("job", [(field_name, message)])


def _data_consumer(design: DesignSchema) -> RoleSpec:
    consumers = design.data_consumers
    if len(consumers) != 1:
        names = ", ".join(repr(r.name) for r in consumers)
        raise _fail(
            "design.roles",
            f"the design has {len(consumers)} data-consumer roles ({names}); "
            "exactly one is supported",
        )
    return consumers[0]


def _resolve(ref: str, datasets: Mapping[str, DatasetInfo] | None) -> DatasetInfo:
    if datasets is None:
        return DatasetInfo(id=ref, name=ref)
    if ref in datasets:
        return datasets[ref]
    by_name = [d for d in datasets.values() if d.name == ref]
    if not by_name:
        raise _fail("datasets", f"unknown dataset {ref!r} (neither a dataset id nor a name)")
    if len(by_name) > 1:
        ids = ", ".join(sorted(d.id for d in by_name))
        raise _fail("datasets", f"dataset name {ref!r} is ambiguous ({ids}); use the dataset id")
    return by_name[0]


def _association_for(role: RoleSpec, group: str) -> dict[str, str]:
    matches = [a for a in role.group_association if group in a.values()]
    if not matches:
        known = sorted({g for a in role.group_association for g in a.values()})
        raise _fail(
            "datasets",
            f"group {group!r} in the job's datasets is not a group of role {role.name!r} "
            f"(its groups: {', '.join(map(repr, known)) or 'none'})",
        )
    if len(matches) > 1:
        raise _fail(
            "datasets",
            f"group {group!r} appears in {len(matches)} groupAssociation entries of role "
            f"{role.name!r}; it must select exactly one",
        )
    return dict(matches[0])


def _consumer_slots(
    role: RoleSpec, spec: JobSpec, datasets: Mapping[str, DatasetInfo] | None
) -> list[tuple[dict[str, str], DatasetInfo]]:
    if not spec.datasets:
        raise _fail(
            "datasets",
            f"the job spec lists no datasets: 'datasets' maps each group of role "
            f"{role.name!r} to dataset ids or names",
        )
    slots: list[tuple[dict[str, str], DatasetInfo]] = []
    seen: dict[str, str] = {}
    for group, refs in spec.datasets.items():
        groups = _association_for(role, group)
        if not refs:
            raise _fail(f"datasets.{group}", f"group {group!r} lists no dataset")
        for ref in refs:
            info = _resolve(ref, datasets)
            if info.id in seen:
                raise _fail(
                    f"datasets.{group}",
                    f"dataset {ref!r} is used twice (groups {seen[info.id]!r} and {group!r}); "
                    "each dataset feeds one task",
                )
            seen[info.id] = group
            slots.append((groups, info))
    problem = spec.trainers_problem(len(slots))
    if problem:
        raise _fail("min_trainers" if "min_trainers" in problem else "optimizer", problem)
    return slots


def plan_tasks(
    design: DesignSchema,
    spec: JobSpec,
    job_id: str,
    datasets: Mapping[str, DatasetInfo] | None = None,
) -> list[PlannedTask]:
    """Expand one job into its tasks, with each task's peers (see the module docstring)."""
    consumer = _data_consumer(design)
    bare: list[PlannedTask] = []
    for role in design.roles:
        if role is consumer:
            for index, (groups, info) in enumerate(_consumer_slots(role, spec, datasets)):
                bare.append(
                    PlannedTask(task_id(job_id, role.name, index), role.name, index, groups, info)
                )
        else:
            entries = role.group_association or [{}]
            index = 0
            for entry in entries:
                for _ in range(role.replica):
                    tid = task_id(job_id, role.name, index)
                    bare.append(PlannedTask(tid, role.name, index, dict(entry)))
                    index += 1
    return [_with_peers(t, design, bare) for t in bare]


def _with_peers(task: PlannedTask, design: DesignSchema, tasks: list[PlannedTask]) -> PlannedTask:
    peers: dict[str, list[PeerRef]] = {}
    for chan_name, group in task.groups.items():
        other = design.channel(chan_name).other_end(task.role)
        found = [
            PeerRef(task_id=p.id, role=p.role)
            for p in tasks
            if p.role == other and p.groups.get(chan_name) == group and p.id != task.id
        ]
        if not found and other != task.role:
            raise _fail(
                "design.roles",
                f"task {task.role}[{task.index}] is in group {group!r} of channel "
                f"{chan_name!r} but no {other!r} task is: check the groupAssociation "
                f"of role {other!r}",
            )
        peers[chan_name] = found
    return PlannedTask(task.id, task.role, task.index, task.groups, task.dataset, peers)


def task_configs(
    design: DesignSchema,
    spec: JobSpec,
    tasks: list[PlannedTask],
    *,
    job_id: str,
    job_name: str,
    owner: str = "",
    design_name: str = "",
    discovery: DiscoverySettings | None = None,
    mqtt: MqttSettings | None = None,
    tracking_uri: str | None = None,
    dataset_uris: Mapping[str, str] | None = None,
) -> list[TaskConfig]:
    """One :class:`TaskConfig` per planned task. ``tracking_uri`` is the platform's tracking
    server, used unless the spec names one (the one place that decides where a job logs).
    ``dataset_uris`` (dataset id -> local uri) fills in where each dataset is when that is known
    here (simulation); on the control plane the node that owns the data fills it in."""
    tracking_uri = spec.tracking.uri or tracking_uri
    configs: list[TaskConfig] = []
    for t in tasks:
        channels = {
            name: ChannelMembership(
                name=name,
                group=group,
                backend=spec.backend or design.channel(name).backend,
                peers=t.peers.get(name, []),
                func_tags=list(design.channel(name).func_tags.get(t.role, [])),
            )
            for name, group in t.groups.items()
        }
        dataset = None
        if t.dataset is not None:
            uri = (dataset_uris or {}).get(t.dataset.id, "")
            dataset = DatasetRef(
                id=t.dataset.id, name=t.dataset.name, uri=uri, format=t.dataset.format
            )
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
                tracking_uri=tracking_uri,
            )
        )
    return configs
