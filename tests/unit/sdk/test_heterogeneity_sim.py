"""Straggler and dropout simulation in ``flame.simulate`` and FedProx's Synthetic(alpha, beta)
generator (issue 23, point 5)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from structlog.testing import capture_logs

import flame
from flame.datasets import load_shard, synthetic
from flame.errors import ConfigError
from flame.heterogeneity import Heterogeneity
from flame.roles import Aggregator, Coordinator, load_role_class

JOB = Path(__file__).parents[3] / "examples" / "central-numpy"
ROLES: dict[str, Any] = {
    "trainer": load_role_class(JOB / "trainer" / "main.py"),
    "aggregator": load_role_class(JOB / "aggregator" / "main.py"),
    "middle-aggregator": Aggregator,
    "coordinator": Coordinator,
}
HP = {"hyperparameters": {"lr": 1.0, "local_steps": 5}}


def test_plans_are_seeded_and_follow_the_probabilities() -> None:
    h = Heterogeneity(availability=0.7, stragglers=0.5, epochs=5, seed=3)
    plans = [h.plan(i, r, {}) for i in range(50) for r in range(1, 41)]
    assert plans == [h.plan(i, r, {}) for i in range(50) for r in range(1, 41)]
    away = sum(p.decline is not None for p in plans) / len(plans)
    slow = [p for p in plans if p.local_epochs is not None]
    assert away == pytest.approx(0.3, abs=0.03)
    assert len(slow) / len(plans) == pytest.approx(0.7 * 0.5, abs=0.03)
    assert {p.local_epochs for p in slow} == {1, 2, 3, 4}
    other = Heterogeneity(availability=0.7, stragglers=0.5, epochs=5, seed=4)
    assert plans != [other.plan(i, r, {}) for i in range(50) for r in range(1, 41)]
    dropped = Heterogeneity(stragglers=1.0, drop_stragglers=True, epochs=5)
    assert dropped.plan(0, 1, {}).decline == "straggler (simulated)"
    assert Heterogeneity(stragglers=1.0).plan(0, 1, {"epochs": 1}).decline is not None


@pytest.mark.parametrize(
    "kwargs", [{"availability": 1.5}, {"stragglers": -0.1}, {"epochs": 0}, {"per_trainer": {0: 2}}]
)
def test_bad_models_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="heterogeneity"):
        Heterogeneity(**kwargs)


@pytest.mark.parametrize("drop", [True, False])
def test_simulated_stragglers_decline_or_do_partial_work_as_planned(drop: bool) -> None:
    h = Heterogeneity(stragglers=0.5, drop_stragglers=drop, epochs=5, seed=1)
    started = time.monotonic()
    with capture_logs() as logs:
        res = flame.simulate(
            JOB, roles=ROLES, overrides={**HP, "rounds": 5, "round_timeout": 60.0}, heterogeneity=h
        )
    assert time.monotonic() - started < 30  # no round waited for its timeout
    assert not [e for e in logs if e["event"] == "round.timeout"]
    planned = [sum(h.plan(i, r, {}).local_epochs is not None or h.plan(i, r, {}).decline is not None
                   for i in range(10)) for r in range(1, 6)]  # fmt: skip
    assert 0 < sum(planned) < 50
    key = "declined" if drop else "partial"
    assert [int(row[key]) for row in res.history[:-1]] == planned
    assert [int(row["trainers"]) for row in res.history[:-1]] == (
        [10 - n for n in planned] if drop else [10] * 5
    )


def test_unavailable_trainers_decline_and_the_job_goes_on() -> None:
    h = Heterogeneity(per_trainer={0: 0.0, 1: 0.0}, seed=0)
    res = flame.simulate(JOB, roles=ROLES, overrides={**HP, "rounds": 3}, heterogeneity=h)
    assert [row["declined"] for row in res.history[:-1]] == [2.0, 2.0, 2.0]


def test_heterogeneity_needs_one_process() -> None:
    with pytest.raises(ConfigError, match="one process"):
        flame.simulate(JOB, backend="grpc", processes=True, heterogeneity=Heterogeneity())


def test_synthetic_follows_fedprox_generator() -> None:
    shards = synthetic(1.0, 1.0, 200)
    sizes = np.array([len(s.y_train) + len(s.y_test) for s in shards])
    assert sizes.min() >= 50 and sizes.max() > 2000  # power-law tail, no cap
    assert [len(s.y_train) for s in shards] == [int(0.9 * n) for n in sizes]
    assert shards[0].x_train.shape[1] == 60 and shards[0].num_classes <= 10
    # non-IID: device input means differ (v_k ~ N(B_k, 1), B_k ~ N(0, 1)); IID: all at 0
    means = np.array([s.x_train.mean() for s in shards[:50]])
    iid = synthetic(0.0, 0.0, 50, iid=True)
    iid_means = np.array([s.x_train.mean() for s in iid])
    assert means.std() > 0.5 and np.abs(iid_means).max() < 0.2


def test_synthetic_uris_are_seeded_and_checked() -> None:
    a, b = load_shard("synthetic://1,1/30/4"), load_shard("synthetic://1,1@0/30/4")
    np.testing.assert_array_equal(a.x_train, b.x_train)
    c = load_shard("synthetic://1,1@1/30/4")
    assert c.x_train.shape != a.x_train.shape or not np.array_equal(c.x_train, a.x_train)
    assert load_shard("synthetic://iid/30/0").x_train.shape[1] == 60
    for bad in (
        "synthetic://one,1/30/0",
        "synthetic://1,1@x/30/0",
        "synthetic://-1,1/30/0",
        "synthetic://x/30/0",
    ):
        with pytest.raises(ConfigError):
            load_shard(bad)
