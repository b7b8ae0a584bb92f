"""A registered Flame model predicts: ``mlflow.pyfunc.load_model("models:/<job>@best")`` and
MLflow's scoring server (what ``flamectl model serve`` runs) answer exactly what the job's own
model answers in the user's process, on the digits test split, for the numpy and the torch
example. The in-process answers are computed here with the examples' own model code and the
job's final weights (the selection metric is one no round reports, so the newest model is the
registered one)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import mlflow
import mlflow.artifacts
import mlflow.pyfunc
import numpy as np
import pytest
import torch
from mlflow import MlflowClient

import flame
from flame.datasets import digits_split
from flame.ports import free_ports
from flame.serving import scoring
from flame.tracking import default_tracking_uri

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def _numpy_in_process(weights: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    return x @ weights["w"] + weights["b"]


def _torch_in_process(weights: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    model = torch.nn.Linear(64, 10)  # the central example's model (hidden = 0)
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in weights.items()})
    model.eval()
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


@pytest.mark.parametrize(
    ("example", "in_process"),
    [("central-numpy", _numpy_in_process), ("central", _torch_in_process)],
    ids=["numpy", "torch"],
)
def test_registered_model_predicts_as_in_process(
    tmp_path: Path, example: str, in_process: object
) -> None:
    overrides = {"rounds": 3, "tracking": {"selection_metric": "not-reported"}}
    result = flame.simulate(EXAMPLES / example, workdir=tmp_path, track=True, overrides=overrides)
    tracking = result.tracking
    assert tracking is not None and tracking.model_uri and tracking.best_round == 3
    final = next(t for t in result.tasks.values() if t.is_top).weights
    x = digits_split(0).x_test
    assert x.dtype == np.float32 and len(x) == 360
    expected = in_process(final, x)  # type: ignore[operator]
    assert expected.shape == (360, 10)

    uri = default_tracking_uri(tmp_path)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    model = mlflow.pyfunc.load_model(tracking.model_uri)
    for name, w in final.items():  # the registered weights are the job's
        np.testing.assert_array_equal(model.unwrap_python_model().weights[name], w)
    got = np.asarray(model.predict(x))
    assert got.dtype == expected.dtype
    np.testing.assert_array_equal(got, expected)
    schema = model.metadata.get_input_schema()
    assert schema is not None and "-1, 64" in str(schema), schema

    version = MlflowClient(tracking_uri=uri, registry_uri=uri).get_model_version_by_alias(
        tracking.model_uri.split("/")[-1].split("@")[0], "best"
    )
    folder = Path(
        mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{version.name}/{version.version}",
            dst_path=str(tmp_path / "download"),
        )
    )
    assert not list(folder.rglob("*.pkl")) and not list(folder.rglob("*.pickle"))
    (port,) = free_ports(1)
    url = f"http://127.0.0.1:{port}"
    proc = scoring.start(folder, port=port)
    try:
        scoring.wait_ready(url, proc)
        answer = httpx.post(
            f"{url}/invocations",
            content=json.dumps({"inputs": x.tolist()}),
            headers={"Content-Type": "application/json"},
            timeout=120,
        )
        assert answer.status_code == 200, answer.text
        served = np.asarray(answer.json()["predictions"], dtype=expected.dtype)
        np.testing.assert_array_equal(served, expected)
    finally:
        scoring.stop(proc)
