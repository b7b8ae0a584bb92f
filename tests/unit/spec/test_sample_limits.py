"""The most samples each sender's update may claim, as the job builder plans it: what the data
owners registered for every dataset below that sender."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flame_spec import DatasetInfo, parse_design, parse_job_spec, plan_tasks

EXAMPLES = Path(__file__).parents[3] / "examples"


def planned(example: str, counts: dict[str, int]) -> dict[str, dict[str, int]]:
    """task id -> {peer task id: max_samples} over all its channels, for tasks of ``example``."""
    design = parse_design(json.loads((EXAMPLES / example / "design.json").read_text()))
    spec = parse_job_spec(json.loads((EXAMPLES / example / "job.json").read_text()))
    datasets = {n: DatasetInfo(id=n, name=n, num_samples=c) for n, c in counts.items()}
    tasks = plan_tasks(design, spec, "job-1", datasets)
    return {
        t.id: {p.task_id: p.max_samples for refs in t.peers.values() for p in refs} for t in tasks
    }


def names(example: str) -> list[str]:
    spec = json.loads((EXAMPLES / example / "job.json").read_text())
    return [n for refs in spec["datasets"].values() for n in refs]


def test_an_aggregator_bounds_each_trainer_by_its_registered_samples() -> None:
    counts = {n: 100 + i for i, n in enumerate(names("central"))}
    plan = planned("central", counts)
    (agg,) = [tid for tid in plan if tid.startswith("aggregator")]
    assert sorted(plan[agg].values()) == sorted(counts.values())
    # the trainers get no bound on the aggregator: it sends models, not sample counts
    assert all(v == 0 for tid, peers in plan.items() if tid != agg for v in peers.values())


def test_a_middle_aggregator_may_claim_the_sum_of_its_group() -> None:
    counts = {n: 10 for n in names("hierarchical")}
    plan = planned("hierarchical", counts)
    top = next(tid for tid in plan if tid.startswith("top-aggregator"))
    middles = {tid: peers for tid, peers in plan.items() if tid.startswith("middle-aggregator")}
    for middle, peers in middles.items():
        trainers = {p: v for p, v in peers.items() if p.startswith("trainer")}
        assert set(trainers.values()) == {10}
        assert plan[top][middle] == 10 * len(trainers)
    assert sum(plan[top].values()) == 10 * len(counts)


def test_a_hybrid_group_leader_may_claim_its_whole_group() -> None:
    counts = {n: 7 for n in names("hybrid")}
    plan = planned("hybrid", counts)
    agg = next(tid for tid in plan if tid.startswith("aggregator"))
    sizes = {tid: 1 + sum(p.startswith("trainer") for p in peers) for tid, peers in plan.items()}
    for trainer, bound in plan[agg].items():
        assert bound == 7 * sizes[trainer]  # itself and its peer-channel group


@pytest.mark.parametrize("example", ["central", "hierarchical"])
def test_one_unknown_count_below_a_sender_leaves_it_unbounded(example: str) -> None:
    counts = {n: 10 for n in names(example)}
    counts[names(example)[0]] = 0
    plan = planned(example, counts)
    top = next(tid for tid in plan if "aggregator" in tid and not tid.startswith("middle"))
    assert 0 in plan[top].values()
    assert any(v > 0 for v in plan[top].values())  # the rest stay bounded


@pytest.mark.parametrize(
    ("tracking", "told"), [({}, "http://mlflow:5000"), ({"enabled": False}, None)]
)
def test_tasks_learn_the_tracking_server_only_when_the_job_tracks(
    tracking: dict[str, bool], told: str | None
) -> None:
    from flame_spec import task_configs

    design = parse_design(json.loads((EXAMPLES / "central" / "design.json").read_text()))
    raw = json.loads((EXAMPLES / "central" / "job.json").read_text())
    spec = parse_job_spec({**raw, "tracking": tracking})
    infos = {n: DatasetInfo(id=n, name=n, num_samples=10) for n in names("central")}
    tasks = plan_tasks(design, spec, "job-1", infos)
    configs = task_configs(
        design, spec, tasks, job_id="job-1", job_name="j", tracking_uri="http://mlflow:5000"
    )
    assert {c.tracking_uri for c in configs} == {told}
