"""Cross-site evaluation: the central example's code, every site's model and the global model
scored on every site's data; the matrix is the job's result and is logged to MLflow."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import flame
from flame.datasets import load_shard
from flame.errors import FlameError
from flame.frameworks import set_weights
from flame.jobdir import load_job_dir
from flame.roles.loader import load_role_class

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
JOB = EXAMPLES / "cross-site"


def test_the_cross_site_example_runs_the_central_examples_code_unchanged() -> None:
    for role in ("trainer", "aggregator"):
        assert (JOB / role / "main.py").read_bytes() == (
            EXAMPLES / "central" / role / "main.py"
        ).read_bytes()
    assert json.loads((JOB / "design.json").read_text()) == json.loads(
        (EXAMPLES / "central" / "design.json").read_text()
    )


def accuracy(weights: dict[str, np.ndarray], uri: str) -> float:
    model = set_weights(torch.nn.Linear(64, 10), weights)
    shard = load_shard(uri)
    with torch.no_grad():
        pred = model(torch.from_numpy(shard.x_test)).argmax(1).numpy()
    return float((pred == shard.y_test).mean())


def test_every_model_is_scored_on_every_site_and_the_global_row_is_the_central_jobs_model(
    tmp_path: Path,
) -> None:
    result = flame.simulate(JOB, workdir=tmp_path, track=True)
    report = result.report
    sites = [f"digits-{i}" for i in range(10)]
    assert report["sites"] == sites
    assert report["models"] == ["global", *sites]
    assert all(sorted(row) == sites for row in report["matrix"].values())
    # training is the central job's: the same global model for the same seed
    central = flame.simulate(EXAMPLES / "central", overrides={"rounds": 5})
    for name, tensor in central.weights.items():
        np.testing.assert_array_equal(result.weights[name], tensor)
    datasets = load_job_dir(JOB).datasets
    for site in sites:
        cell = report["matrix"]["global"][site]
        assert cell["accuracy"] == pytest.approx(accuracy(result.weights, datasets[site]), abs=1e-6)
    local = [report["matrix"][s][t]["accuracy"] for s in sites for t in sites]
    assert min(local) > 0.7 and max(local) <= 1.0
    # the matrix is in MLflow: one metric per cell, and the report as an artifact
    from mlflow import MlflowClient

    assert result.tracking is not None and result.tracking.run_id
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = client.get_run(result.tracking.run_id)
    key = "xsite/digits-3/digits-7/accuracy"
    assert run.data.metrics[key] == pytest.approx(
        report["matrix"]["digits-3"]["digits-7"]["accuracy"]
    )
    logged = json.loads(
        Path(
            client.download_artifacts(run.info.run_id, "cross_site.json", str(tmp_path))
        ).read_text()
    )
    assert logged["matrix"] == report["matrix"]


def test_a_site_with_too_few_samples_fails_the_job_before_anyone_trains(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shard = load_shard("digits://iid/10/9")
    small = tmp_path / "small.npz"
    np.savez(small, x_train=shard.x_train, y_train=shard.y_train,
             x_test=shard.x_test[:5], y_test=shard.y_test[:5])  # fmt: skip
    trained: list[str] = []
    trainer = load_role_class(JOB / "trainer" / "main.py")
    monkeypatch.setattr(trainer, "train", lambda self: trained.append(self.config.task_id))
    with pytest.raises(FlameError, match=r"site digits-9: dataset 'digits-9' has 5 evaluation "
                       r"samples; the job needs at least min_samples=10"):  # fmt: skip
        flame.simulate(JOB, roles={"trainer": trainer}, datasets={"digits-9": str(small)})
    assert trained == []


def test_a_training_class_in_a_statistics_job_is_refused_with_the_reason() -> None:
    trainer = load_role_class(EXAMPLES / "central" / "trainer" / "main.py")
    server = load_role_class(EXAMPLES / "statistics" / "server" / "main.py")
    with pytest.raises(
        FlameError,
        match="a statistics job's roles subclass StatisticsSite or "
        "StatisticsServer; DigitsTrainer does not",
    ):
        flame.simulate(EXAMPLES / "statistics", roles={"site": trainer, "server": server})
