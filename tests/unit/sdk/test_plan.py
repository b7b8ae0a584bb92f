"""flame.plan expands designs like the controller's job builder (ids, groups, peers)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from flame.config import DesignSchema, JobSpec
from flame.errors import ConfigError
from flame.plan import expand, task_id
from flame.roles.topology import group_leaders, topology_of

FIXTURES = Path(__file__).parents[2] / "fixtures" / "designs"
EXAMPLES = Path(__file__).parents[3] / "examples"


def load(name: str) -> tuple[DesignSchema, JobSpec]:
    root = EXAMPLES / name
    design = DesignSchema.model_validate_json((root / "design.json").read_text())
    return design, JobSpec.model_validate_json((root / "job.json").read_text())


def uris(spec: JobSpec) -> dict[str, str]:
    return {n: f"/data/{n}.npz" for names in spec.datasets.values() for n in names}


def test_task_ids_are_deterministic_and_dns_safe() -> None:
    digest = hashlib.sha256(b"job-1/trainer/3").hexdigest()[:10]
    assert task_id("job-1", "trainer", 3) == f"trainer-3-{digest}"


def test_central_every_trainer_sees_the_aggregator_and_back() -> None:
    design, spec = load("central")
    configs = expand(design, spec, uris(spec), job_id="j", job_name="central")
    trainers = [c for c in configs if c.role == "trainer"]
    (agg,) = [c for c in configs if c.role == "aggregator"]
    assert len(trainers) == 10
    assert sorted(agg.peers("param-channel")) == sorted(t.task_id for t in trainers)
    for t in trainers:
        assert t.peers("param-channel") == [agg.task_id]
        assert t.dataset is not None and t.dataset.uri == f"/data/{t.dataset.name}.npz"
    assert [t.index for t in trainers] == list(range(10))
    again = expand(design, spec, uris(spec), job_id="j", job_name="central")
    assert [c.task_id for c in again] == [c.task_id for c in configs]


def test_hierarchical_groups_pair_trainers_with_their_middle_aggregator() -> None:
    design, spec = load("hierarchical")
    configs = expand(design, spec, uris(spec), job_id="j", job_name="h")
    middles = [c for c in configs if c.role == "middle-aggregator"]
    (top,) = [c for c in configs if c.role == "top-aggregator"]
    assert len(middles) == 2
    for m in middles:
        group = m.channels["param-channel"].group
        expected = {
            c.task_id
            for c in configs
            if c.role == "trainer" and c.channels["param-channel"].group == group
        }
        assert set(m.peers("param-channel")) == expected and len(expected) == 5
        assert m.peers("global-channel") == [top.task_id]
        topo = topology_of(m)
        assert (topo.upstream, topo.downstream) == ("global-channel", "param-channel")
    assert topology_of(top).is_top


def test_hybrid_peer_rings_are_per_group_and_leaders_are_lowest_ids() -> None:
    design, spec = load("hybrid")
    configs = expand(design, spec, uris(spec), job_id="j", job_name="hy")
    trainers = [c for c in configs if c.role == "trainer"]
    for t in trainers:
        ring = t.peers("peer-channel")
        assert t.task_id not in ring and len(ring) == 4
        assert topology_of(t).peer == "peer-channel"
    leaders = group_leaders(trainers[0], "peer-channel", "trainer")
    assert len(leaders) == 2


def test_coordinated_topology_is_read_from_the_channels() -> None:
    design, spec = load("coordinated")
    configs = expand(design, spec, uris(spec), job_id="j", job_name="co")
    by_role = {c.role: c for c in configs}
    assert topology_of(by_role["trainer"]).coordinator == "trainer-coord-channel"
    assert topology_of(by_role["middle-aggregator"]).upstream == "global-channel"
    assert topology_of(by_role["top-aggregator"]).is_top
    assert len([c for c in configs if c.role == "middle-aggregator"]) == 2


@pytest.mark.parametrize("fixture", sorted(p.stem for p in FIXTURES.glob("*.json")))
def test_controller_fixtures_expand(fixture: str) -> None:
    raw = json.loads((FIXTURES / f"{fixture}.json").read_text())
    design = DesignSchema.model_validate(raw["design"])
    spec = JobSpec.model_validate(raw["job"])
    configs = expand(design, spec, uris(spec), job_id="fx", job_name=fixture)
    consumers = [c for c in configs if c.dataset is not None]
    assert len(consumers) == sum(len(v) for v in spec.datasets.values())
    for c in configs:
        topology_of(c)  # every task knows where it sits


def test_unknown_group_and_missing_dataset_are_clear_errors() -> None:
    design, spec = load("central")
    bad = spec.model_copy(update={"datasets": {"nowhere": ["digits-0"]}})
    with pytest.raises(ConfigError, match="nowhere"):
        expand(design, bad, uris(spec), job_id="j", job_name="c")
    with pytest.raises(ConfigError, match="digits-0"):
        expand(design, spec, {}, job_id="j", job_name="c")
