"""Expand a design + job spec into the tasks of one job (the job builder).

Expansion rules (the SDK's ``flame.plan`` follows the same ones; a contract test checks parity):

1. The design has exactly one data-consumer role (``isDataConsumer: true``); vertical FL with
   several comes later.  ``spec.datasets`` maps a *group* to a list of dataset ids or names;
   names are resolved through the ``datasets`` mapping (keyed by id; a name must match exactly
   one dataset).  For every group ``g`` (spec order) and every dataset ``d`` (list order) there
   is one task of the data-consumer role.  Its ``groups`` is the role's ``groupAssociation``
   entry that has ``g`` among its values (no entry, or more than one, is an error naming the
   group); ``node_id`` is the dataset's node and ``dataset_id`` is ``d``.  A dataset may be used
   once per job, and the job needs at least ``spec.min_trainers`` data-consumer tasks.
2. Every other role gets, for each of its ``groupAssociation`` entries (in order), ``replica``
   tasks whose ``groups`` is that entry.  A role without entries gets ``replica`` tasks with
   empty groups.  These tasks have no node (``node_id=None``): a deployer runs them.
3. Indexes count per role from 0 in that order.  The task id is deterministic, stable across runs
   and processes, and a DNS label: ``f"{role[:40]}-{index}-{sha256(job/role/index)[:10]}"``.
4. Peers: a task ``t`` is on channel ``c`` when ``c`` is in ``t.groups``; with ``g = t.groups[c]``
   its peers are every task of the other end's role whose ``groups[c] == g`` (for a channel whose
   two ends are the same role: every *other* task of that role in ``g``).  A task on a channel
   between two different roles with no peer there is an error (it would wait forever).
5. ``config`` is a dict valid as ``flame.config.TaskConfig``: ids, role, index, owner, the
   normalized design and job spec, one channel membership per channel the task is on
   (``spec.backend`` overrides the channel's backend), the dataset reference for data consumers
   (``uri`` is filled in by the node that owns the data), and discovery through the control plane
   when ``apiserver_url`` is given (``static`` otherwise).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flame_service.errors import InvalidArgument

from .design import (
    DesignSpec,
    JobSpecModel,
    RoleSpec,
    design_to_dict,
    job_spec_to_dict,
)


@dataclass(frozen=True)
class DatasetInfo:
    """What the builder needs to know about a registered dataset."""

    id: str
    name: str
    node_id: str
    format: str


@dataclass(frozen=True)
class PlannedTask:
    id: str
    role: str
    index: int
    node_id: str | None
    dataset_id: str | None
    groups: dict[str, str]
    data_consumer: bool
    config: dict[str, Any]


@dataclass(frozen=True)
class _Slot:
    role: str
    index: int
    groups: dict[str, str]
    dataset: DatasetInfo | None


def task_id(job_id: str, role: str, index: int) -> str:
    """Deterministic, DNS-safe task id (≤ 56 characters)."""
    digest = hashlib.sha256(f"{job_id}/{role}/{index}".encode()).hexdigest()[:10]
    return f"{role[:40].rstrip('-')}-{index}-{digest}"


def _data_consumer(design: DesignSpec) -> RoleSpec:
    consumers = [r for r in design.roles if r.is_data_consumer]
    if len(consumers) != 1:
        names = ", ".join(repr(r.name) for r in consumers)
        raise InvalidArgument(
            f"the design has {len(consumers)} data-consumer roles ({names}); "
            "exactly one is supported"
        )
    return consumers[0]


def _resolve_dataset(ref: str, datasets: Mapping[str, DatasetInfo]) -> DatasetInfo:
    if ref in datasets:
        return datasets[ref]
    by_name = [d for d in datasets.values() if d.name == ref]
    if not by_name:
        raise InvalidArgument(f"unknown dataset {ref!r} (neither a dataset id nor a name)")
    if len(by_name) > 1:
        ids = ", ".join(sorted(d.id for d in by_name))
        raise InvalidArgument(f"dataset name {ref!r} is ambiguous ({ids}); use the dataset id")
    return by_name[0]


def _association_for(role: RoleSpec, group: str) -> dict[str, str]:
    matches = [a for a in role.group_association if group in a.values()]
    if not matches:
        known = sorted({g for a in role.group_association for g in a.values()})
        raise InvalidArgument(
            f"group {group!r} in the job's datasets is not a group of role {role.name!r} "
            f"(its groups: {', '.join(map(repr, known)) or 'none'})"
        )
    if len(matches) > 1:
        raise InvalidArgument(
            f"group {group!r} appears in {len(matches)} groupAssociation entries of role "
            f"{role.name!r}; it must select exactly one"
        )
    return dict(matches[0])


def _plan_slots(
    design: DesignSpec, spec: JobSpecModel, datasets: Mapping[str, DatasetInfo]
) -> list[_Slot]:
    consumer = _data_consumer(design)
    if not spec.datasets:
        raise InvalidArgument(
            f"the job spec lists no datasets: 'datasets' maps each group of role "
            f"{consumer.name!r} to dataset ids or names"
        )
    slots: list[_Slot] = []
    seen: dict[str, str] = {}
    for role in design.roles:
        if role is consumer:
            for group, refs in spec.datasets.items():
                groups = _association_for(role, group)
                if not refs:
                    raise InvalidArgument(f"group {group!r} in the job's datasets lists no dataset")
                for ref in refs:
                    info = _resolve_dataset(ref, datasets)
                    if info.id in seen:
                        raise InvalidArgument(
                            f"dataset {ref!r} is used twice (groups {seen[info.id]!r} and "
                            f"{group!r}); each dataset feeds one task"
                        )
                    seen[info.id] = group
                    slots.append(_Slot(role.name, len(seen) - 1, groups, info))
            n = len(seen)
            if n < spec.min_trainers:
                raise InvalidArgument(
                    f"min_trainers is {spec.min_trainers} but the job has only {n} "
                    f"{role.name!r} task(s)"
                )
        else:
            entries = role.group_association or [{}]
            index = 0
            for entry in entries:
                for _ in range(role.replica):
                    slots.append(_Slot(role.name, index, dict(entry), None))
                    index += 1
    return slots


def build_tasks(
    *,
    job_id: str,
    job_name: str,
    owner: str,
    design_name: str,
    design: DesignSpec,
    spec: JobSpecModel,
    datasets: Mapping[str, DatasetInfo],
    apiserver_url: str | None = None,
) -> list[PlannedTask]:
    """Expand one job into its tasks (see the module docstring for the rules)."""
    slots = _plan_slots(design, spec, datasets)
    ids = {(s.role, s.index): task_id(job_id, s.role, s.index) for s in slots}
    design_json = design_to_dict(design)
    spec_json = job_spec_to_dict(spec)
    discovery: dict[str, Any] = (
        {"kind": "control-plane", "url": apiserver_url} if apiserver_url else {"kind": "static"}
    )
    channels = {c.name: c for c in design.channels}

    tasks: list[PlannedTask] = []
    for slot in slots:
        tid = ids[(slot.role, slot.index)]
        memberships: dict[str, Any] = {}
        for chan_name, group in slot.groups.items():
            chan = channels[chan_name]
            other = chan.other_end(slot.role)
            peers = [
                {"task_id": ids[(p.role, p.index)], "role": p.role}
                for p in slots
                if p.role == other
                and p.groups.get(chan_name) == group
                and (p.role, p.index) != (slot.role, slot.index)
            ]
            if not peers and other != slot.role:
                raise InvalidArgument(
                    f"task {slot.role}[{slot.index}] is in group {group!r} of channel "
                    f"{chan_name!r} but no {other!r} task is: check the groupAssociation "
                    f"of role {other!r}"
                )
            memberships[chan_name] = {
                "name": chan_name,
                "group": group,
                "backend": spec.backend or chan.backend,
                "peers": peers,
                "func_tags": list(chan.func_tags.get(slot.role, [])),
            }
        config: dict[str, Any] = {
            "job_id": job_id,
            "job_name": job_name,
            "task_id": tid,
            "role": slot.role,
            "index": slot.index,
            "owner": owner,
            "design_name": design_name,
            "design": design_json,
            "job": spec_json,
            "channels": memberships,
            "discovery": dict(discovery),
        }
        if slot.dataset is not None:
            config["dataset"] = {
                "id": slot.dataset.id,
                "name": slot.dataset.name,
                "uri": "",
                "format": slot.dataset.format,
            }
        tasks.append(
            PlannedTask(
                id=tid,
                role=slot.role,
                index=slot.index,
                node_id=slot.dataset.node_id if slot.dataset else None,
                dataset_id=slot.dataset.id if slot.dataset else None,
                groups=dict(slot.groups),
                data_consumer=slot.dataset is not None,
                config=config,
            )
        )
    return tasks
