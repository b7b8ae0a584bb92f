"""The controller's job builder and the SDK's planner expand every job into the same task graph.

``flame.simulate`` (SDK, ``flame.plan.expand``) and the control plane
(``flame_controller.jobs.builder.build_tasks``) implement the expansion rules separately (services
never import the SDK); this test holds them together on every design fixture.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from flame.config import DesignSchema, JobSpec, TaskConfig
from flame.plan import expand
from flame_controller.jobs.builder import DatasetInfo, build_tasks
from flame_controller.jobs.design import parse_design, parse_job_spec

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "designs"
NAMES = sorted(p.stem for p in FIXTURES.glob("*.json"))

Graph = dict[tuple[str, int], dict[str, Any]]


def graph(configs: list[TaskConfig]) -> Graph:
    """(role, index) -> channels (group, backend, func_tags, peers as (role, index))."""
    where = {c.task_id: (c.role, c.index) for c in configs}
    return {
        (c.role, c.index): {
            name: (
                m.group,
                m.backend,
                tuple(m.func_tags),
                sorted(where[p.task_id] for p in m.peers),
            )
            for name, m in c.channels.items()
        }
        for c in configs
    }


def controller_configs(fx: dict[str, Any], job_id: str) -> list[TaskConfig]:
    planned = build_tasks(
        job_id=job_id,
        job_name="parity",
        owner="u",
        design_name="d",
        design=parse_design(fx["design"]),
        spec=parse_job_spec(fx["job"]),
        datasets={d["id"]: DatasetInfo(**d) for d in fx["datasets"]},
    )
    return [TaskConfig.model_validate(p.config) for p in planned]


def sdk_configs(fx: dict[str, Any], job_id: str) -> list[TaskConfig]:
    spec = JobSpec.model_validate(fx["job"])
    uris = {ref: f"/data/{ref}" for refs in spec.datasets.values() for ref in refs}
    return expand(
        DesignSchema.model_validate(fx["design"]), spec, uris, job_id=job_id, job_name="parity"
    )


def test_every_topology_has_a_fixture() -> None:
    assert set(NAMES) >= {
        "central",
        "hierarchical",
        "hybrid",
        "asynchronous",
        "distributed",
        "coordinated",
    }


@pytest.mark.parametrize("name", NAMES)
def test_same_task_graph(name: str) -> None:
    fx = json.loads((FIXTURES / f"{name}.json").read_text())
    ours = controller_configs(fx, "job-parity")
    theirs = sdk_configs(fx, "job-parity")
    assert graph(ours) == graph(theirs)
    assert [c.task_id for c in ours] == [c.task_id for c in theirs]  # same ids, same order
    for a, b in zip(ours, theirs, strict=True):
        assert a.design == b.design
        assert a.job == b.job


@pytest.mark.parametrize("backend", ["inproc", "mqtt"])
def test_same_backend_override(backend: str) -> None:
    fx = json.loads((FIXTURES / "hierarchical.json").read_text())
    fx["job"]["backend"] = backend
    assert graph(controller_configs(fx, "j")) == graph(sdk_configs(fx, "j"))


def _schema(model: Any) -> Any:
    """A model's JSON schema minus titles and descriptions; our class names as the SDK's."""
    text = json.dumps(model.model_json_schema(by_alias=True), sort_keys=True)
    text = text.replace("DesignSpec", "DesignSchema").replace("JobSpecModel", "JobSpec")

    def strip(x: Any) -> Any:
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items() if k not in ("title", "description")}
        if isinstance(x, list):
            return [strip(v) for v in x]
        return x

    return strip(json.loads(text))


def test_controller_schema_copy_matches_the_sdk() -> None:
    """Services cannot import the SDK, so the controller re-states the design and job-spec
    schema; a field added on one side only would make valid jobs fail on the other."""
    from flame_controller.jobs.design import DesignSpec, JobSpecModel

    assert _schema(DesignSpec) == _schema(DesignSchema)
    assert _schema(JobSpecModel) == _schema(JobSpec)
