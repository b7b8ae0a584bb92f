"""The best global model registered in MLflow (``<job>@best``) is the model whose accuracy was
logged: loading it back and evaluating it on the digits test split reproduces that number."""

from __future__ import annotations

from pathlib import Path

import mlflow
import mlflow.pyfunc
import numpy as np
from mlflow import MlflowClient

import flame
from flame.datasets import digits_split
from flame.tracking import default_tracking_uri

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "central-numpy"


def test_registered_best_model_reproduces_the_logged_accuracy(tmp_path: Path) -> None:
    result = flame.simulate(EXAMPLE, workdir=tmp_path, track=True, overrides={"rounds": 6})
    tracking = result.tracking
    assert tracking is not None and tracking.model_uri and tracking.model_uri.endswith("@best")

    uri = default_tracking_uri(tmp_path)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    history = client.get_metric_history(tracking.run_id, "accuracy")
    assert sorted(m.step for m in history) == list(range(7))  # the initial model + 6 rounds
    logged_best = max(m.value for m in history)
    assert tracking.best_metrics["accuracy"] == logged_best
    run = client.get_run(tracking.run_id)
    assert {"loss", "accuracy"} <= run.data.metrics.keys()
    assert any(k.startswith("system/") for k in run.data.metrics)
    assert run.data.params and run.data.tags["flame.job_id"]

    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    weights = mlflow.pyfunc.load_model(tracking.model_uri).unwrap_python_model().weights
    test = digits_split(0)
    logits = test.x_test.astype(np.float64) @ weights["w"].astype(np.float64) + weights["b"]
    accuracy = float((logits.argmax(1) == test.y_test).mean())
    assert abs(accuracy - logged_best) < 1e-9, (accuracy, logged_best)
