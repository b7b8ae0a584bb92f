"""Task expansion: a design and a job spec become the tasks of one job (the job builder).

The control plane and ``flame.simulate`` both expand a job here, so a job has the same task
graph wherever it runs.

1. A ``training``, ``statistics`` or ``cross-site-evaluation`` job has exactly one
   data-consumer role (``isDataConsumer: true``); a ``vertical`` job has two or more (its
   parties). ``spec.datasets`` maps a *group* to a list of dataset ids or names, resolved
   through the ``datasets`` mapping (keyed by id; a name must match exactly one dataset;
   ``datasets=None`` takes every reference as the name of a dataset). With several
   data-consumer roles a key is ``"<role>/<group>"``, or a bare group when exactly one
   data-consumer role has it. For every key (spec order) and every dataset (list order) there
   is one task of that key's role. Its ``groups`` is the role's ``groupAssociation`` entry that
   has the group among its values (no entry, or more than one, is an error naming the group);
   its node is the dataset's node. A dataset feeds one task per job, every data-consumer role
   gets at least one, and the job needs at least ``spec.min_trainers`` data-consumer tasks in
   all (and as many as its rule needs).
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
    num_samples: int = 0  # training samples, as the data owner registered them (0: unknown)


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


def _data_consumers(design: DesignSchema, spec: JobSpec) -> list[RoleSpec]:
    consumers = design.data_consumers
    names = ", ".join(repr(r.name) for r in consumers)
    if spec.kind == "vertical":
        if len(consumers) < 2:
            raise _fail(
                "design.roles",
                f"a vertical job needs two or more data-consumer roles (its parties); the design "
                f"has {len(consumers)} ({names})",
            )
    elif len(consumers) != 1:
        raise _fail(
            "design.roles",
            f"the design has {len(consumers)} data-consumer roles ({names}); a {spec.kind} job "
            "needs exactly one (several are for vertical jobs: set the job's kind to 'vertical')",
        )
    return consumers


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


def _role_of_key(key: str, consumers: list[RoleSpec]) -> tuple[RoleSpec, str]:
    """The data-consumer role a ``spec.datasets`` key names, and the group in it."""
    if len(consumers) == 1:
        return consumers[0], key
    if "/" in key:
        role_name, group = key.split("/", 1)
        for role in consumers:
            if role.name == role_name:
                return role, group
        known = ", ".join(repr(r.name) for r in consumers)
        raise _fail(
            f"datasets.{key}", f"{role_name!r} is not a data-consumer role (they are: {known})"
        )
    owners = [r for r in consumers if any(key in a.values() for a in r.group_association)]
    if len(owners) == 1:
        return owners[0], key
    if not owners:
        raise _fail(
            "datasets",
            f"group {key!r} in the job's datasets is a group of no data-consumer role; "
            "name it '<role>/<group>'",
        )
    names = ", ".join(repr(r.name) for r in owners)
    raise _fail(
        "datasets",
        f"group {key!r} is a group of several data-consumer roles ({names}): name it "
        f"'<role>/{key}', e.g. '{owners[0].name}/{key}'",
    )


def _consumer_slots(
    consumers: list[RoleSpec], spec: JobSpec, datasets: Mapping[str, DatasetInfo] | None
) -> dict[str, list[tuple[dict[str, str], DatasetInfo]]]:
    """Per data-consumer role: the groups and dataset of each of its tasks, in order."""
    if not spec.datasets:
        roles = ", ".join(repr(r.name) for r in consumers)
        raise _fail(
            "datasets",
            f"the job spec lists no datasets: 'datasets' maps each group of role(s) {roles} "
            "to dataset ids or names",
        )
    slots: dict[str, list[tuple[dict[str, str], DatasetInfo]]] = {r.name: [] for r in consumers}
    seen: dict[str, str] = {}
    for key, refs in spec.datasets.items():
        role, group = _role_of_key(key, consumers)
        groups = _association_for(role, group)
        if not refs:
            raise _fail(f"datasets.{key}", f"group {key!r} lists no dataset")
        for ref in refs:
            info = _resolve(ref, datasets)
            if info.id in seen:
                raise _fail(
                    f"datasets.{key}",
                    f"dataset {ref!r} is used twice (groups {seen[info.id]!r} and {key!r}); "
                    "each dataset feeds one task",
                )
            seen[info.id] = key
            slots[role.name].append((groups, info))
    empty = [name for name, items in slots.items() if not items]
    if empty:
        raise _fail(
            "datasets",
            f"data-consumer role {empty[0]!r} has no dataset: add '{empty[0]}/<group>' "
            "with its dataset(s) to the job's datasets",
        )
    problem = spec.trainers_problem(sum(len(items) for items in slots.values()))
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
    slots = _consumer_slots(_data_consumers(design, spec), spec, datasets)
    bare: list[PlannedTask] = []
    for role in design.roles:
        if role.name in slots:
            for index, (groups, info) in enumerate(slots[role.name]):
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
    members = _members(bare)
    linked = [_with_peers(t, design, members) for t in bare]
    return _with_sample_limits(linked, design)


Members = dict[tuple[str, str, str], list[PlannedTask]]


def _members(tasks: list[PlannedTask]) -> Members:
    """Tasks by (role, channel, group), in task order: each task finds its peers without
    looking at every task (planning 10,000 trainers stays linear)."""
    members: Members = {}
    for t in tasks:
        for chan_name, group in t.groups.items():
            members.setdefault((t.role, chan_name, group), []).append(t)
    return members


def _with_peers(task: PlannedTask, design: DesignSchema, members: Members) -> PlannedTask:
    peers: dict[str, list[PeerRef]] = {}
    for chan_name, group in task.groups.items():
        other = design.channel(chan_name).other_end(task.role)
        found = [
            PeerRef(task_id=p.id, role=p.role)
            for p in members.get((other, chan_name, group), [])
            if p.id != task.id
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


def _role_levels(design: DesignSchema) -> dict[str, int]:
    """How many channel hops each role is above the data consumers (which are at 0). A peer
    on a lower level sends this task updates that sum the samples below it."""
    level = {r.name: 0 for r in design.data_consumers}
    frontier = list(level)
    while frontier:
        nxt: list[str] = []
        for name in frontier:
            for chan in design.channels:
                if name in chan.pair:
                    other = chan.other_end(name)
                    if other not in level:
                        level[other] = level[name] + 1
                        nxt.append(other)
        frontier = nxt
    return level


def _with_sample_limits(tasks: list[PlannedTask], design: DesignSchema) -> list[PlannedTask]:
    """Each peer below a task gets the most samples its updates may claim: the registered
    samples of every dataset under it, counting the peers it sums with on its own level (a
    hybrid group's leader sends its whole group's count). Unknown anywhere below: no bound."""
    level = _role_levels(design)
    by_id = {t.id: t for t in tasks}
    limits: dict[str, int] = {}

    def lower(t: PlannedTask) -> list[str]:
        here = level.get(t.role)
        return [
            p.task_id
            for refs in t.peers.values()
            for p in refs
            if here is not None and level.get(p.role, here) < here
        ]

    def level_mates(t: PlannedTask) -> list[PlannedTask]:
        seen, todo = {t.id}, [t]
        while todo:
            cur = todo.pop()
            for refs in cur.peers.values():
                for p in refs:
                    if p.role == cur.role and p.task_id not in seen:
                        seen.add(p.task_id)
                        todo.append(by_id[p.task_id])
        return [by_id[i] for i in sorted(seen)]

    def limit(task_id: str) -> int:
        if task_id in limits:
            return limits[task_id]
        mates = level_mates(by_id[task_id])
        total = 0
        for m in mates:
            parts = [m.dataset.num_samples] if m.dataset is not None else []
            parts += [limit(below) for below in lower(m)]
            if 0 in parts or not parts:
                total = 0
                break
            total += sum(parts)
        for m in mates:
            limits[m.id] = total
        return total

    out: list[PlannedTask] = []
    for t in tasks:
        below = set(lower(t))
        peers = {
            chan: [
                p.model_copy(update={"max_samples": limit(p.task_id)}) if p.task_id in below else p
                for p in refs
            ]
            for chan, refs in t.peers.items()
        }
        out.append(PlannedTask(t.id, t.role, t.index, t.groups, t.dataset, peers))
    return out


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
    server, used unless the spec names one or turns tracking off (the one place that decides
    where a job logs).
    ``dataset_uris`` (dataset id -> local uri) fills in where each dataset is when that is known
    here (simulation); on the control plane the node that owns the data fills it in."""
    tracking_uri = (spec.tracking.uri or tracking_uri) if spec.tracking.enabled else None
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
