"""The tracking server is the platform's setting: a job submitted as the README shows (no
``tracking`` in its spec) logs its run and registers its model on the MLflow server that
``flamectl up`` started, not in a file in the aggregator's task folder, as the job's own account,
into an experiment and a registered model named for its owner and its id; nobody without an
account reads anything there. The owner lists, downloads, aliases and serves the model (whose
answers over HTTP and through MLflow's own loader are the model's in this process); another
tenant gets "not found" for each."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess

import httpx
import mlflow.pyfunc as mlflow_pyfunc
import mlflow.tracking._model_registry.utils as mlflow_registry_utils
import mlflow.tracking._tracking_service.utils as mlflow_tracking_utils
import numpy as np
import psutil
import pytest
import torch
from safetensors.numpy import load_file

from flame.cli.client import FlameClient
from flame.datasets import digits_split
from flame.ports import free_ports
from tests.e2e.jobs_harness import Cluster, start_cluster

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def _flamectl(cluster: Cluster, config: Path, token: str) -> Callable[..., CompletedProcess[str]]:
    env = {**os.environ, "FLAME_CONFIG": str(config)}
    for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        env.pop(key, None)
    exe = str(Path(sys.executable).with_name("flamectl"))

    def run(*argv: str, check: bool = True) -> CompletedProcess[str]:
        proc = subprocess.run(
            [exe, *argv], env=env, capture_output=True, text=True, timeout=300, input=token
        )
        assert not check or proc.returncode == 0, (argv, proc.stdout, proc.stderr)
        return proc

    login = ("login", "--server", cluster.state.api_url, "--token-file", "-")
    run(*login, "--ca-file", cluster.state.ca_file)
    return run


def _torch_predictions(weights: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """The central example's model (hidden = 0) in this process, with the given weights."""
    model = torch.nn.Linear(64, 10)
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in weights.items()})
    model.eval()
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def _serve_and_predict(config: Path, ref: str, x: np.ndarray) -> np.ndarray:
    """``flamectl model serve REF`` until it answers; its predictions for ``x``; then Ctrl-C."""
    env = {**os.environ, "FLAME_CONFIG": str(config)}
    for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        env.pop(key, None)
    (port,) = free_ports(1)
    exe = str(Path(sys.executable).with_name("flamectl"))
    proc = subprocess.Popen(
        [exe, "model", "serve", ref, "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # printed once the endpoint answers
        assert f"http://127.0.0.1:{port}/invocations" in line, (line, proc.poll())
        answer = httpx.post(
            f"http://127.0.0.1:{port}/invocations",
            json={"inputs": x.tolist()},
            timeout=120,
        )
        assert answer.status_code == 200, answer.text
        return np.asarray(answer.json()["predictions"])
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=120) == 0
        if proc.stdout is not None:
            proc.stdout.close()


def test_a_job_without_a_tracking_uri_logs_to_the_stacks_mlflow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    monkeypatch.chdir(tmp_path)  # whatever MLflow's client writes by default stays here
    cluster = start_cluster(tmp_path / "stack", nodes=3, shards=3, mlflow=True)
    try:
        job = cluster.submit(
            "central", "readme-demo", {"default": cluster.datasets}, rounds=3, min_trainers=3
        )
        assert cluster.wait(job) == "completed", cluster.reason(job)
        metrics = cluster.client.get_metrics(job)
        assert metrics.run_uri.startswith(cluster.state.mlflow_url)
        # the tracking server is one web server: no job runner or GenAI workers beside it
        (server,) = [p for p in cluster.state.procs if p.name == "mlflow"]
        workers = [c.cmdline() for c in psutil.Process(server.pid).children(recursive=True)]
        assert len(workers) <= 1 and not any("jobs" in " ".join(c) for c in workers), workers
        url = cluster.state.mlflow_url
        anonymous = httpx.post(f"{url}/api/2.0/mlflow/experiments/search", json={}, timeout=30)
        assert anonymous.status_code == 401
        login = cluster.client.tracking_credentials()  # the job's owner: reads its runs
        assert login.uri == url
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", login.username)
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", login.password)
        mlflow = MlflowClient(tracking_uri=url, registry_uri=url)
        assert metrics.model_uri == f"models:/readme-demo-{job[:12]}@best"
        model = mlflow.get_model_version_by_alias(f"readme-demo-{job[:12]}", "best")
        run = mlflow.get_run(model.run_id)
        assert run.data.tags["flame.job_id"] == job
        experiment = mlflow.get_experiment(run.info.experiment_id).name
        assert experiment.endswith("/readme-demo") and experiment != "readme-demo"
        steps = {m.step for m in mlflow.get_metric_history(run.info.run_id, "accuracy")}
        assert steps == {0, 1, 2, 3}
        with pytest.raises(MlflowException):  # the owner reads runs; only the job writes them
            mlflow.log_metric(run.info.run_id, "forged", 1.0)
        # another tenant's login reads nothing of it
        user = cluster.client.create_user("mallory")
        token = cluster.client.create_token(user.id).token
        with FlameClient(cluster.state.api_url, token, security=cluster.state.security()) as other:
            theirs = other.tracking_credentials()
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", theirs.username)
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", theirs.password)
        stranger = MlflowClient(tracking_uri=url, registry_uri=url)
        with pytest.raises(MlflowException, match=r"PERMISSION_DENIED|403|Permission"):
            stranger.get_run(run.info.run_id)
        assert experiment not in {e.name for e in stranger.search_experiments()}
        # flamectl model: the owner lists, inspects and downloads
        name = f"readme-demo-{job[:12]}"
        owner = _flamectl(cluster, tmp_path / "owner.yaml", cluster.state.admin_token)
        assert name in owner("model", "list").stdout
        got = json.loads(owner("model", "get", f"{name}@best", "-o", "json").stdout)
        assert got["version"] == model.version and "best" in got["aliases"]
        written = owner("model", "download", f"{name}@best", "--to", str(tmp_path / "dl")).stdout
        assert (tmp_path / "dl" / f"{name}-v{model.version}").is_dir(), written
        assert list((tmp_path / "dl").rglob("*.safetensors")), written
        # the owner moves an alias and serves the model: its answers are the model's
        assert "version 1" in owner("model", "alias", name, model.version, "prod").stdout
        got = json.loads(owner("model", "get", f"{name}@prod", "-o", "json").stdout)
        assert got["version"] == model.version and "prod" in got["aliases"]
        # @best stays the job's selection (refused: 1); there is no version 99 (not found: 3)
        for argv, code in (((name, model.version, "best"), 1), ((name, "99", "prod"), 3)):
            refused = owner("model", "alias", *argv, check=False)
            assert refused.returncode == code, (argv, refused.stdout, refused.stderr)
        weights = load_file(next((tmp_path / "dl").rglob("weights.safetensors")))
        x = digits_split(0).x_test
        expected = _torch_predictions(weights, x)
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", login.username)
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", login.password)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)  # MLflow's own loader, as a user runs it
        monkeypatch.setenv("MLFLOW_REGISTRY_URI", url)
        # an earlier test in this process may have set MLflow's process-wide URIs, which win
        # over the environment: point them here too, for this test only
        monkeypatch.setattr(mlflow_tracking_utils, "_tracking_uri", url)
        monkeypatch.setattr(mlflow_registry_utils, "_registry_uri", url)
        loaded = mlflow_pyfunc.load_model(f"models:/{name}@prod")
        np.testing.assert_array_equal(np.asarray(loaded.predict(x)), expected)
        served = _serve_and_predict(tmp_path / "owner.yaml", f"{name}@prod", x)
        np.testing.assert_array_equal(served.astype(expected.dtype), expected)
        # another tenant: not found for every model command
        other = _flamectl(cluster, tmp_path / "mallory.yaml", token)
        assert name not in other("model", "list").stdout
        for argv in (
            ("get", f"{name}@best"),
            ("versions", name),
            ("download", name),
            ("alias", name, model.version, "mine"),
            ("serve", f"{name}@best", "--port", str(free_ports(1)[0])),
        ):
            refused = other("model", *argv, check=False)
            assert refused.returncode == 3, (argv, refused.stdout, refused.stderr)  # not found
        assert "mine" not in owner("model", "get", f"{name}@best", "-o", "json").stdout
        # nothing was tracked into the aggregator's folder
        tasks = Path(cluster.state.home) / "data" / "tasks" / job
        assert not list(tasks.rglob("mlflow.db"))
    finally:
        cluster.client.close()
        cluster.stack.down(cluster.state)
