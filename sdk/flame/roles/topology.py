"""Where a task sits in the job's graph, read from its config (never hard-coded in user code).

Roles are ranked by their distance from the data-consumer role over the design's channels,
ignoring the coordinator: trainers are tier 0, middle aggregators tier 1, the top aggregator the
highest tier. For one task, a channel to a lower tier is *downstream* (it distributes and
aggregates there), to a higher tier *upstream* (it fetches and uploads there), a channel whose
two ends are the same role is a *peer* channel (ring all-reduce), and a channel to the
coordinator is the *coordinator* channel. The coordinator is the role named ``coordinator`` or
one whose channels all carry the ``coordinate`` funcTag.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from flame.config import DesignSchema, TaskConfig
from flame.errors import ConfigError
from flame_spec import plan_tasks

COORDINATOR_TAG = "coordinate"


def coordinator_roles(design: DesignSchema) -> set[str]:
    roles: set[str] = set()
    for role in design.roles:
        if role.is_data_consumer:
            continue
        tags = [c.func_tags.get(role.name) for c in design.channels if role.name in c.pair]
        if role.name == "coordinator" or (tags and all(t and COORDINATOR_TAG in t for t in tags)):
            roles.add(role.name)
    return roles


def role_tiers(design: DesignSchema) -> dict[str, int]:
    coordinators = coordinator_roles(design)
    start = next(r.name for r in design.roles if r.is_data_consumer)
    tiers = {start: 0}
    todo = deque([start])
    while todo:
        role = todo.popleft()
        for chan in design.channels:
            if role not in chan.pair:
                continue
            for other in chan.pair:
                if other not in tiers and other not in coordinators:
                    tiers[other] = tiers[role] + 1
                    todo.append(other)
    for coord in coordinators:
        tiers[coord] = -1
    return tiers


@dataclass(frozen=True)
class Topology:
    """One task's view: which of its channels goes where."""

    upstream: str | None = None
    downstream: str | None = None
    peer: str | None = None
    coordinator: str | None = None
    tier: int = 0

    @property
    def is_top(self) -> bool:
        """A top aggregator: it distributes but fetches from nobody."""
        return self.downstream is not None and self.upstream is None


def topology_of(config: TaskConfig) -> Topology:
    design = config.design
    tiers = role_tiers(design)
    coordinators = coordinator_roles(design)
    mine = tiers.get(config.role)
    if mine is None:
        raise ConfigError(f"role {config.role!r} is connected to no data consumer")
    found: dict[str, str | None] = {
        "upstream": None,
        "downstream": None,
        "peer": None,
        "coord": None,
    }

    def put(kind: str, name: str) -> None:
        if found[kind] is not None:
            raise ConfigError(
                f"role {config.role!r} has two {kind} channels ({found[kind]!r}, {name!r})"
            )
        found[kind] = name

    for name in config.channels:
        a, b = design.channel(name).pair
        if a == b:
            put("peer", name)
            continue
        other = b if config.role == a else a
        if config.role in coordinators:
            continue  # a coordinator's channels are all "assignment" channels
        if other in coordinators:
            put("coord", name)
        elif tiers.get(other, mine) < mine:
            put("downstream", name)
        else:
            put("upstream", name)
    return Topology(
        upstream=found["upstream"],
        downstream=found["downstream"],
        peer=found["peer"],
        coordinator=found["coord"],
        tier=mine,
    )


def group_leaders(config: TaskConfig, peer_channel: str, role: str) -> set[str]:
    """Lowest task id of every ``peer_channel`` group of ``role`` (hybrid topology)."""
    groups: dict[str, list[str]] = {}
    for task in plan_tasks(config.design, config.job, config.job_id):
        if task.role == role and peer_channel in task.groups:
            groups.setdefault(task.groups[peer_channel], []).append(task.id)
    return {min(ids) for ids in groups.values()}
