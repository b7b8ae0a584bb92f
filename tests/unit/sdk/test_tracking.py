"""MlflowTracker against real MLflow stores: a local SQLite store and a real `mlflow server`."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from mlflow import MlflowClient

from flame.cli.stack import MLFLOW_SERVER_ENV
from flame.serving.model_card import ModelCard
from flame.tracking import MlflowTracker, NullTracker

ROLE = """
import numpy as np
from flame import Aggregator

class Linear(Aggregator):
    def initialize(self):
        width = int(self.hyperparameters["width"])
        self.model = {"w": np.zeros((width, 1), np.float32), "b": np.zeros(1, np.float32)}
"""


def _run_job(uri: str, tmp_path: Path, name: str) -> tuple[MlflowTracker, dict]:
    role = tmp_path / "aggregator"
    role.mkdir(exist_ok=True)
    (role / "main.py").write_text(ROLE)
    example = np.zeros((1, 2), np.float32)
    card = ModelCard(role, "main.py", "Linear", {"width": 2}, 0, example, example[:, :1])
    tracker = MlflowTracker(
        tracking_uri=uri,
        experiment=name,
        run_name=f"{name}-run",
        selection_metric="accuracy",
        register_as=name,
        system_metrics_interval=0.2,
    )
    tracker.describe_model(card)
    tracker.start({"rounds": 3, "optimizer": {"name": "fedavg"}}, {"flame.job_id": "job-1"})
    accuracies = [0.5, 0.9, 0.7]
    models = {}
    for rnd, acc in enumerate(accuracies, start=1):
        weights = {"w": np.full((2, 1), float(rnd), np.float32), "b": np.zeros(1, np.float32)}
        models[rnd] = weights
        tracker.log_round(rnd, {"accuracy": acc, "loss": 1.0 - acc})
        tracker.offer_model(rnd, weights, {"accuracy": acc})
    return tracker, models


def _check(uri: str, tracker: MlflowTracker, models: dict, name: str) -> None:
    import mlflow
    import mlflow.pyfunc

    result = tracker.finish()
    assert result.best_round == 2 and result.model_uri == f"models:/{name}@best"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    run = client.get_run(result.run_id)
    assert run.data.params["optimizer.name"] == "fedavg"
    assert run.data.tags["flame.job_id"] == "job-1"
    history = client.get_metric_history(result.run_id, "accuracy")
    assert [(m.step, m.value) for m in history] == [(1, 0.5), (2, 0.9), (3, 0.7)]
    assert any(k.startswith("system/") for k in run.data.metrics), run.data.metrics.keys()
    version = client.get_model_version_by_alias(name, "best")
    assert version.run_id == result.run_id
    mlflow.set_tracking_uri(uri)  # how a user loads models:/name@best from that registry
    mlflow.set_registry_uri(uri)
    model = mlflow.pyfunc.load_model(result.model_uri)
    weights = model.unwrap_python_model().weights
    np.testing.assert_array_equal(weights["w"], models[2]["w"])
    np.testing.assert_allclose(model.predict(np.ones((1, 2), np.float32)), [[4.0]])


def test_mlflow_tracker_on_a_local_sqlite_store(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker, models = _run_job(uri, tmp_path, "digits-local")
    _check(uri, tracker, models, "digits-local")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def tracking_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real ``mlflow server`` with its artifact proxy, as the control plane runs one."""
    tmp = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{tmp / 'server.db'}",
            "--artifacts-destination",
            str(tmp / "artifacts"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **MLFLOW_SERVER_ENV},
    )
    try:
        uri = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180  # a loaded 2-core machine: ~10 s idle
        while True:
            try:
                if httpx.get(f"{uri}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None, "mlflow server exited"
            assert time.monotonic() < deadline, "mlflow server did not become healthy"
            time.sleep(0.2)
        yield uri
    finally:
        server.terminate()
        try:
            server.wait(timeout=120)  # a loaded machine can take a while to stop gunicorn
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@pytest.mark.slow
def test_mlflow_tracker_against_a_real_tracking_server(
    tmp_path: Path, tracking_server: str
) -> None:
    tracker, models = _run_job(tracking_server, tmp_path, "digits-remote")
    _check(tracking_server, tracker, models, "digits-remote")


TRACK_WITHOUT_MLFLOW = """
import sys
import numpy as np
from flame.tracking import MlflowTracker

tracker = MlflowTracker(tracking_uri=sys.argv[1], experiment="lean", run_name="lean-run",
                        register_as="lean", system_metrics_interval=0.1)
tracker.start({"rounds": 2}, {"flame.job_id": "job-2"})
for rnd in (1, 2):
    tracker.log_round(rnd, {"accuracy": rnd / 4})
    tracker.offer_model(rnd, {"w": np.full(3, rnd, np.float32)}, {"accuracy": rnd / 4})
    tracker.flush()
result = tracker.finish()
print(result.model_uri, result.run_id)
print(sorted(m for m in sys.modules if m == "mlflow" or m.startswith("mlflow.")))
"""


@pytest.mark.slow
def test_an_aggregator_tracks_to_a_server_without_importing_mlflow(
    tmp_path: Path, tracking_server: str
) -> None:
    """MLflow's imports cost every tracked job seconds of CPU (issue 21); a tracking server
    is written to over its REST API, and the model it gets loads with MLflow as before."""
    import mlflow
    import mlflow.pyfunc

    out = subprocess.run(
        [sys.executable, "-c", TRACK_WITHOUT_MLFLOW, tracking_server],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    ).stdout.splitlines()
    assert out[-1] == "[]", f"the tracker imported {out[-1]}"
    model_uri, run_id = out[-2].split()
    assert model_uri == "models:/lean@best"
    client = MlflowClient(tracking_uri=tracking_server, registry_uri=tracking_server)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.params == {"rounds": "2"}
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "accuracy")] == [
        (1, 0.25),
        (2, 0.5),
    ]
    assert "system/cpu_utilization_percentage" in run.data.metrics
    mlflow.set_tracking_uri(tracking_server)
    mlflow.set_registry_uri(tracking_server)
    model = mlflow.pyfunc.load_model(model_uri)
    np.testing.assert_array_equal(model.unwrap_python_model().weights["w"], np.full(3, 2.0))


def test_null_tracker_tracks_nothing() -> None:
    t = NullTracker()
    t.start({}, {})
    t.log_round(1, {"accuracy": 1.0})
    assert t.finish().run_id is None


class _Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.thread: set[str] = set()

    def start(self, params: dict, tags: dict) -> None:
        import threading

        self.thread.add(threading.current_thread().name)
        self.calls.append(("start",))

    def log_round(self, rnd: int, metrics: dict) -> None:
        if rnd == 2:
            raise RuntimeError("tracking server went away")
        self.calls.append(("round", rnd, metrics["accuracy"]))

    def offer_model(self, rnd: int, weights: dict, metrics: dict) -> None:
        self.calls.append(("offer", rnd, float(weights["w"][0])))

    def finish(self, status: str = "FINISHED") -> object:
        self.calls.append(("finish", status))
        return "result"


def test_background_tracker_keeps_order_off_the_caller_thread_and_survives_failures() -> None:
    from flame.tracking import BackgroundTracker

    inner = _Recorder()
    tracker = BackgroundTracker(inner)
    tracker.start({}, {})
    weights = {"w": np.zeros(1, np.float32)}
    for rnd in (1, 2, 3):
        tracker.log_round(rnd, {"accuracy": rnd / 10})
        weights["w"][0] = rnd
        tracker.offer_model(rnd, weights, {})  # the caller mutates its weights right after
    assert tracker.finish() == "result"
    assert inner.thread == {"flame-tracking"}
    assert inner.calls == [
        ("start",),
        ("round", 1, 0.1),
        ("offer", 1, 1.0),
        ("offer", 2, 2.0),
        ("round", 3, 0.3),
        ("offer", 3, 3.0),
        ("finish", "FINISHED"),
    ]


class _Batching:
    """An inner tracker that keeps rounds until ``flush``, and counts the flushes that sent."""

    def __init__(self) -> None:
        self.kept: list[int] = []
        self.sent: list[list[int]] = []

    def log_round(self, rnd: int, metrics: dict) -> None:
        self.kept.append(rnd)

    def flush(self) -> None:
        if self.kept:
            self.sent.append(self.kept)
            self.kept = []

    def finish(self, status: str = "FINISHED") -> object:
        self.flush()
        return None


def test_quick_rounds_reach_mlflow_in_a_few_requests_not_one_each() -> None:
    """Rounds of a few milliseconds would cost the tracking server a request each, on the
    cores the rounds run on: the worker sends what waited at most once per interval."""
    from flame.tracking import BackgroundTracker

    inner = _Batching()
    tracker = BackgroundTracker(inner, flush_every=1.0)  # type: ignore[arg-type]
    started = time.monotonic()
    for rnd in range(30):
        tracker.log_round(rnd, {"accuracy": 0.5})
        time.sleep(0.01)
    elapsed = time.monotonic() - started
    deadline = time.monotonic() + 60
    while sum(map(len, inner.sent)) < 30 and time.monotonic() < deadline:
        time.sleep(0.05)  # the rounds that waited go out within an interval, with no call
    assert [r for batch in inner.sent for r in batch] == list(range(30))
    assert len(inner.sent) <= 2 + elapsed / 1.0, inner.sent
    tracker.finish()


def test_rounds_that_waited_for_a_busy_tracker_reach_mlflow_in_one_request(tmp_path: Path) -> None:
    from flame.tracking import BackgroundTracker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    inner = MlflowTracker(tracking_uri=uri, experiment="busy", run_name="busy-run")
    batches: list[int] = []
    inner.start({}, {})
    send = inner.store.log_batch

    def counted(run_id: str, metrics: list = (), **kw: object) -> None:  # type: ignore[assignment]
        rounds = [m for m in metrics if not m.key.startswith("system/")]
        if rounds:
            batches.append(len(rounds))
        send(run_id, metrics=metrics, **kw)

    inner.store.log_batch = counted  # type: ignore[method-assign]
    tracker = BackgroundTracker(inner)
    busy = threading.Event()
    tracker.call(lambda: busy.wait(60))  # the worker is held up (e.g. by MLflow's imports)
    for rnd in range(25):
        tracker.log_round(rnd, {"accuracy": rnd / 100, "loss": 1 - rnd / 100})
    busy.set()
    tracker.log_round(25, {"accuracy": 0.25, "loss": 0.75})
    result = tracker.finish()
    history = MlflowClient(tracking_uri=uri).get_metric_history(result.run_id, "accuracy")
    assert [(m.step, m.value) for m in history] == [(r, r / 100) for r in range(26)]
    # the 25 rounds that waited went out together (round 25 with them, or right after)
    assert batches[0] >= 50 and sum(batches) == 52 and len(batches) <= 2, batches


def test_a_round_mlflow_refuses_does_not_hold_up_the_next(tmp_path: Path) -> None:
    from flame.tracking import BackgroundTracker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = BackgroundTracker(MlflowTracker(tracking_uri=uri, experiment="x", run_name="x"))
    tracker.start({}, {})
    tracker.log_round(0, {"accuracy": 0.5, "../elsewhere": 1.0})  # a name MLflow refuses
    tracker.log_round(1, {"accuracy": 0.6})
    result = tracker.finish()
    history = MlflowClient(tracking_uri=uri).get_metric_history(result.run_id, "accuracy")
    assert (1, 0.6) in [(m.step, m.value) for m in history]


def test_control_plane_metrics_do_not_wait_for_a_slow_mlflow() -> None:
    from flame.tracking import CompositeTracker, ControlPlaneReporter, TrackingResult

    class SlowMlflow(_Recorder):
        def __init__(self) -> None:
            super().__init__()
            self.release = threading.Event()

        def start(self, params: dict, tags: dict) -> None:
            assert self.release.wait(30)  # importing mlflow, creating the run ...
            super().start(params, tags)

        def finish(self, status: str = "FINISHED") -> object:
            super().finish(status)
            return TrackingResult(run_uri="http://mlflow/run", model_uri="models:/j@best")

    posted: list[dict] = []

    class Reporter(ControlPlaneReporter):
        def _post(self, body: dict) -> bool:
            posted.append(body)
            return True

    mlflow = SlowMlflow()
    tracker = CompositeTracker(mlflow, Reporter("http://api", "token", "agg-0"))
    tracker.start({}, {})
    tracker.log_round(0, {"accuracy": 0.5})
    deadline = time.monotonic() + 10
    while not posted and time.monotonic() < deadline:
        time.sleep(0.01)
    (sent,) = posted
    assert [(m["key"], m["value"], m["step"]) for m in sent["metrics"]] == [("accuracy", 0.5, 0)]
    assert mlflow.calls == []  # MLflow is still starting
    mlflow.release.set()
    result = tracker.finish()
    assert result.model_uri == "models:/j@best"
    assert mlflow.calls == [("start",), ("round", 0, 0.5), ("finish", "FINISHED")]
    assert posted[-1] == {
        "metrics": [],
        "run_uri": "http://mlflow/run",
        "model_uri": "models:/j@best",
    }


CLASSIFIER = """
import numpy as np
from flame import Aggregator

class Classifier(Aggregator):
    def initialize(self):
        k = int(self.hyperparameters["classes"])
        self.model = {"w": np.zeros((3, k), np.float32), "b": np.zeros(k, np.float32)}

    def predict(self, inputs):  # declared by the role: the class, not the scores
        return super().predict(inputs).argmax(1)

    def input_example(self):
        return np.eye(3, dtype=np.float32)
"""


def test_a_role_declares_how_its_registered_model_predicts(tmp_path: Path) -> None:
    import mlflow
    import mlflow.pyfunc

    from flame.roles.loader import load_role_class
    from flame.serving.model_card import describe

    (tmp_path / "aggregator").mkdir()
    (tmp_path / "aggregator" / "main.py").write_text(CLASSIFIER)
    role = load_role_class(tmp_path / "aggregator" / "main.py").for_prediction({"classes": 4})
    role.initialize()
    card = describe(role)
    assert card is not None and card.output_example.tolist() == [0, 0, 0]
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = MlflowTracker(
        tracking_uri=uri, experiment="clf", run_name="clf-run", register_as="clf"
    )
    tracker.describe_model(card)
    tracker.start({}, {})
    w = np.array([[0, 1, 0, 0], [0, 0, 0, 2], [3, 0, 0, 0]], np.float32)
    tracker.offer_model(1, {"w": w, "b": np.zeros(4, np.float32)}, {"accuracy": 1.0})
    result = tracker.finish()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    model = mlflow.pyfunc.load_model(result.model_uri)
    x = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 0]], np.float32)
    assert model.predict(x).tolist() == [1, 3, 0, 0]
    assert model.metadata.get_input_schema() is not None
    assert model.metadata.get_output_schema() is not None


def test_a_job_with_tracking_turned_off_logs_nothing_to_mlflow(tmp_path: Path) -> None:
    import flame
    from flame.tracking import default_tracking_uri

    example = Path(__file__).resolve().parents[3] / "examples" / "central-numpy"
    off = {"rounds": 2, "tracking": {"enabled": False}}
    result = flame.simulate(example, workdir=tmp_path / "off", track=True, overrides=off)
    assert result.tracking is not None and result.tracking.run_id is None
    assert result.tracking.model_uri is None
    assert [h["round"] for h in result.history] == [0, 1, 2]  # the curve is still there
    assert not list((tmp_path / "off").rglob("mlflow.db"))
    assert not list((tmp_path / "off").rglob("mlartifacts"))

    on = flame.simulate(example, workdir=tmp_path / "on", track=True, overrides={"rounds": 2})
    assert on.tracking is not None and on.tracking.run_id
    client = MlflowClient(tracking_uri=default_tracking_uri(tmp_path / "on"))
    assert [m.step for m in client.get_metric_history(on.tracking.run_id, "accuracy")] == [0, 1, 2]


def test_the_models_fixed_files_go_while_the_job_runs_and_its_end_sends_two(
    tmp_path: Path,
) -> None:
    """At a job's end the tracking server shares the cores with every ending task: each request
    then took 0.1-0.4 s. What does not depend on the weights goes up as soon as the model is
    described; the end sends the weights and MLmodel, and the model still loads whole."""
    import mlflow
    import mlflow.pyfunc

    role = tmp_path / "aggregator"
    role.mkdir()
    (role / "main.py").write_text(ROLE)
    example = np.zeros((1, 2), np.float32)
    card = ModelCard(role, "main.py", "Linear", {"width": 2}, 0, example, example[:, :1])
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = MlflowTracker(tracking_uri=uri, experiment="early", run_name="r", register_as="early")
    tracker.start({}, {})
    sent: list[list[str]] = []
    send = tracker.store.log_artifacts

    def recorded(run_id: str, local_dir: Path, artifact_path: str) -> None:
        files = [p for p in local_dir.rglob("*") if p.is_file()]
        sent.append(sorted(p.relative_to(local_dir).as_posix() for p in files))
        send(run_id, local_dir, artifact_path)

    tracker.store.log_artifacts = recorded  # type: ignore[method-assign]
    tracker.describe_model(card)
    assert len(sent) == 1 and "artifacts/code/main.py" in sent[0]
    assert "requirements.txt" in sent[0] and "input_example.json" in sent[0]
    assert "MLmodel" not in sent[0] and "artifacts/weights.safetensors" not in sent[0]
    for rnd, acc in enumerate([0.5, 0.9, 0.7], start=1):
        w = {"w": np.full((2, 1), float(rnd), np.float32), "b": np.zeros(1, np.float32)}
        tracker.log_round(rnd, {"accuracy": acc})
        tracker.offer_model(rnd, w, {"accuracy": acc})
    result = tracker.finish()
    assert sent[1:] == [["MLmodel", "artifacts/weights.safetensors"]]
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    model = mlflow.pyfunc.load_model(result.model_uri)
    np.testing.assert_allclose(model.predict(np.ones((1, 2), np.float32)), [[4.0]])
    history = MlflowClient(tracking_uri=uri).get_metric_history(result.run_id, "accuracy")
    assert [(m.step, m.value) for m in history] == [(1, 0.5), (2, 0.9), (3, 0.7)]
