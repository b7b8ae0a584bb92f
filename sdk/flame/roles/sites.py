"""Names and orders of a job's data-consumer tasks that are the same wherever the job runs.

Task ids contain the job id, which differs between ``flame.simulate`` and the control plane;
the plan's roles, task indexes and the datasets the job spec names do not. Results that name
sites, and computations whose floating-point result depends on the order of the parties, use
these, so both give the same numbers. Both come from the plan (the job's spec), never from
what a peer claims.
"""

from __future__ import annotations

from flame.config import TaskConfig
from flame_spec import plan_tasks


def site_labels(config: TaskConfig) -> dict[str, str]:
    """Each data-consumer task's name in reports: its dataset as the job spec names it."""
    return {
        t.id: t.dataset.name
        for t in plan_tasks(config.design, config.job, config.job_id)
        if t.dataset is not None
    }


def party_order(config: TaskConfig, peers: list[str]) -> list[str]:
    """``peers`` in design role order, then task index."""
    rank = {r.name: i for i, r in enumerate(config.design.roles)}
    where = {
        t.id: (rank[t.role], t.index) for t in plan_tasks(config.design, config.job, config.job_id)
    }
    return sorted(peers, key=lambda p: where.get(p, (len(rank), 0)))
