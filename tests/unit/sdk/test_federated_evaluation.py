"""Federated evaluation on a schedule (issue 23, point 4): every k rounds all (or a share of)
the sites evaluate the global model, logged as ``eval/...`` with ``step = round``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

import flame
from flame.roles import Aggregator, Coordinator, load_role_class
from flame.tracking import default_tracking_uri
from flame_spec import SpecError, parse_job_spec

JOB = Path(__file__).parents[3] / "examples" / "central-numpy"
NumpyTrainer: Any = load_role_class(JOB / "trainer" / "main.py")
ROLES: dict[str, Any] = {
    "trainer": NumpyTrainer,
    "aggregator": load_role_class(JOB / "aggregator" / "main.py"),
    "middle-aggregator": Aggregator,
    "coordinator": Coordinator,
}
HP = {"hyperparameters": {"lr": 1.0, "local_steps": 5}}


def test_every_5_rounds_all_sites_evaluate_and_mlflow_gets_eval_accuracy(tmp_path: Path) -> None:
    result = flame.simulate(
        JOB,
        roles=ROLES,
        workdir=tmp_path,
        track=True,
        overrides={
            **HP,
            "rounds": 10,
            "selector": {"name": "random", "kwargs": {"k": 3}},
            "min_trainers": 3,
            "evaluation": {"every": 5},
        },
    )
    rows = {h["round"]: h for h in result.history}
    assert [r for r, h in rows.items() if "eval/accuracy" in h] == [5]  # step 10 is the final
    assert rows[5]["eval/sites"] == 10.0 and rows[5]["trainers"] == 3.0  # all sites, not 3
    assert rows[5]["eval/accuracy"] > 0.8
    assert result.tracking is not None
    uri = default_tracking_uri(tmp_path)
    history = MlflowClient(tracking_uri=uri).get_metric_history(
        result.tracking.run_id, "eval/accuracy"
    )
    assert [(m.step, m.value) for m in history] == [(5, rows[5]["eval/accuracy"])]


def test_a_fraction_of_the_sites_evaluates_and_training_is_unchanged() -> None:
    plain = flame.simulate(JOB, roles=ROLES, overrides={**HP, "rounds": 6})
    evaluated = flame.simulate(
        JOB,
        roles=ROLES,
        overrides={**HP, "rounds": 6, "evaluation": {"every": 2, "fraction": 0.5}},
    )
    sites = [h.get("eval/sites") for h in evaluated.history]
    assert sites == [None, None, 5.0, None, 5.0, None, None]
    for name, value in plain.weights.items():
        assert (evaluated.weights[name] == value).all()  # evaluating does not train


@pytest.mark.parametrize("bad", [{"every": 0}, {"every": 5, "fraction": 0}, {"fraction": 0.5}])
def test_a_bad_schedule_is_refused_at_the_door(bad: dict[str, Any]) -> None:
    with pytest.raises(SpecError):
        parse_job_spec({"rounds": 1, "datasets": {"default": ["d"]}, "evaluation": bad})
