"""The tracking server is the platform's setting: a job submitted as the README shows (no
``tracking`` in its spec) logs its run and registers its model on the MLflow server that
``flamectl up`` started, not in a file in the aggregator's task folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.jobs_harness import start_cluster

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def test_a_job_without_a_tracking_uri_logs_to_the_stacks_mlflow(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    cluster = start_cluster(tmp_path / "stack", nodes=3, shards=3, mlflow=True)
    try:
        job = cluster.submit(
            "central", "readme-demo", {"default": cluster.datasets}, rounds=3, min_trainers=3
        )
        assert cluster.wait(job) == "completed", cluster.reason(job)
        metrics = cluster.client.get_metrics(job)
        assert metrics.run_uri.startswith(cluster.state.mlflow_url)
        url = cluster.state.mlflow_url
        mlflow = MlflowClient(tracking_uri=url, registry_uri=url)
        model = mlflow.get_model_version_by_alias("readme-demo", "best")
        run = mlflow.get_run(model.run_id)
        assert run.data.tags["flame.job_id"] == job
        steps = {m.step for m in mlflow.get_metric_history(run.info.run_id, "accuracy")}
        assert steps == {0, 1, 2, 3}
        # nothing was tracked into the aggregator's folder
        tasks = Path(cluster.state.home) / "data" / "tasks" / job
        assert not list(tasks.rglob("mlflow.db"))
    finally:
        cluster.client.close()
        cluster.stack.down(cluster.state)
