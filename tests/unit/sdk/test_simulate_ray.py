"""flame.simulate(..., backend="ray"): the job's tasks over the actors of a local Ray cluster."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import flame
from flame.errors import ConfigError
from flame.heterogeneity import Heterogeneity
from flame.roles import load_role_class
from flame.roles.base import RoleResult

ray = pytest.importorskip("ray")

JOB = Path(__file__).parents[3] / "examples" / "central-numpy"
ROUNDS = {"rounds": 3}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def local_ray() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False)
    yield
    ray.shutdown()


def same_weights(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_the_job_over_ray_ends_with_inproc_weights_bit_for_bit() -> None:
    alone = flame.simulate(JOB, overrides=ROUNDS)
    seen: list[dict[str, Any]] = []
    spread = flame.simulate(JOB, backend="ray", hosts=3, overrides=ROUNDS, on_round=seen.append)
    assert same_weights(alone.weights, spread.weights)
    timeless = [{k: v for k, v in h.items() if k != "round_time"} for h in spread.history]
    assert timeless == [{k: v for k, v in h.items() if k != "round_time"} for h in alone.history]
    # every task reported back, from every host, and the rounds reached this process in order
    assert sorted(spread.tasks) == sorted(alone.tasks)
    assert [e["round"] for e in seen] == [h["round"] for h in alone.history]
    assert all(isinstance(r, RoleResult) for r in spread.tasks.values())


def test_one_host_and_the_classes_given_by_the_caller() -> None:
    roles = {
        "trainer": load_role_class(JOB / "trainer" / "main.py"),
        "aggregator": load_role_class(JOB / "aggregator" / "main.py"),
    }
    alone = flame.simulate(JOB, overrides=ROUNDS)
    spread = flame.simulate(JOB, roles=roles, backend="ray", hosts=1, overrides=ROUNDS)
    assert same_weights(alone.weights, spread.weights)


class FailingAggregator(flame.Aggregator):
    def initialize(self) -> None:
        raise ValueError("the aggregator's own bug")


def test_the_top_aggregators_error_is_raised_as_inproc_raises_it() -> None:
    roles = {
        "trainer": load_role_class(JOB / "trainer" / "main.py"),
        "aggregator": FailingAggregator,
    }
    with pytest.raises(ValueError, match="the aggregator's own bug") as raised:
        flame.simulate(JOB, roles=roles, backend="ray", hosts=2, overrides=ROUNDS)
    assert type(raised.value) is ValueError  # the error itself, not Ray's wrapper of it


NumpyTrainer = load_role_class(JOB / "trainer" / "main.py")


class BreaksInRoundTwo(NumpyTrainer):  # type: ignore[misc, valid-type]
    """A class built on one from a user's file (Ray must ship both by value)."""

    def train(self) -> None:
        if self.config.index == 3 and self.round == 2:
            raise RuntimeError("trainer 3 breaks")
        super().train()


def test_a_trainer_that_fails_on_another_host_is_dropped_as_inproc_drops_it() -> None:
    roles = {
        "trainer": BreaksInRoundTwo,
        "aggregator": load_role_class(JOB / "aggregator" / "main.py"),
    }
    spec = {"rounds": 3, "min_trainers": 5, "round_timeout": 5}
    alone = flame.simulate(JOB, roles=roles, overrides=spec)
    spread = flame.simulate(JOB, roles=roles, backend="ray", hosts=2, overrides=spec)
    assert [h["trainers"] for h in spread.history] == [10.0, 9.0, 9.0, 9.0]
    assert same_weights(alone.weights, spread.weights)
    assert len(spread.tasks) == len(alone.tasks) == 10  # the failed trainer has no result


def test_what_ray_cannot_run_is_refused_before_anything_starts() -> None:
    with pytest.raises(ConfigError, match="ray"):
        flame.simulate(JOB, backend="ray", processes=True)
    with pytest.raises(ConfigError, match="heterogeneity"):
        flame.simulate(JOB, backend="ray", heterogeneity=Heterogeneity())
    with pytest.raises(ConfigError, match="hosts must be at least 1"):
        flame.simulate(JOB, backend="ray", hosts=0)


def test_without_ray_installed_the_error_says_how_to_get_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ConfigError, match="pip install"):
        flame.simulate(JOB, backend="ray", overrides=ROUNDS)


def test_aggregators_stay_on_host_0_and_trainers_are_shared_out() -> None:
    from flame.plan import expand
    from flame.ray_backend import place
    from flame_spec import parse_design, parse_job_spec

    design = parse_design(json.loads((JOB / "design.json").read_text()))
    spec = json.loads((JOB / "job.json").read_text())
    spec.update(datasets={"default": [f"d{i}" for i in range(5)]})
    names = {f"d{i}": f"d{i}" for i in range(5)}
    configs = expand(design, parse_job_spec(spec), names, job_id="j", job_name="j")
    shares = place(configs, 3)
    assert shares[0][0].role == "aggregator"
    assert [sum(c.role == "trainer" for c in s) for s in shares] == [2, 2, 1]
    # more hosts than tasks: no host is left without work
    assert len(place(configs, 10)) == 5
