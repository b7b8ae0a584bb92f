"""Experiment tracking for the top aggregator (DESIGN §4 Tracking).

Only the top aggregator tracks; trainers get :class:`NullTracker` (privacy: their own logs go to
the control plane). :class:`MlflowTracker` logs params, per-round metrics with ``step=round``
(one ``log_batch`` per round, or one for all the rounds that waited), system metrics under
MLflow's names and tags, keeps the best global model by the job's selection metric and at the end
logs it (safetensors weights in a models-from-code pyfunc) and registers it as ``<job name>`` with
alias ``best``. It writes through a :mod:`flame.mlflow_store`: a tracking server's REST API
(MLflow itself is not imported) or ``MlflowClient`` for a local store, always with an explicit
tracking URI (no global MLflow state: several simulated jobs can share one process). Under the
control plane, :class:`ControlPlaneReporter` also sends the round metrics to the apiserver for
``flamectl job watch``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import queue
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import httpx
import numpy as np
import structlog

from flame.config import TaskConfig, TrackingSpec
from flame.connect import PLAINTEXT, Security, sync_http_client
from flame.mlflow_store import MetricPoint, RunStore, StoreError, store_for
from flame.outbox import Outbox
from flame.tensors import Weights, copy_weights, write_safetensors
from flame_spec.retry import Backoff

if TYPE_CHECKING:
    from flame.serving.model_card import ModelCard
    from flame.system_metrics import SystemSampler

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class TrackingResult:
    run_id: str | None = None
    run_uri: str | None = None
    model_uri: str | None = None  # models:/<name>@best when registered
    best_round: int | None = None
    best_metrics: dict[str, float] = field(default_factory=dict)


class Tracker(Protocol):
    def start(self, params: dict[str, Any], tags: dict[str, str]) -> None: ...

    def log_round(self, rnd: int, metrics: dict[str, float]) -> None: ...

    def offer_model(self, rnd: int, weights: Weights, metrics: dict[str, float]) -> None: ...

    def log_json(self, name: str, data: dict[str, Any]) -> None: ...

    def describe_model(self, card: ModelCard) -> None:
        """How the model predicts (logged with the best model: signature, example, code)."""

    def finish(self, status: str = "FINISHED") -> TrackingResult: ...


class NullTracker:
    """Tracks nothing (trainers, tests)."""

    def start(self, params: dict[str, Any], tags: dict[str, str]) -> None:
        return None

    def log_round(self, rnd: int, metrics: dict[str, float]) -> None:
        return None

    def offer_model(self, rnd: int, weights: Weights, metrics: dict[str, float]) -> None:
        return None

    def log_json(self, name: str, data: dict[str, Any]) -> None:
        return None

    def describe_model(self, card: ModelCard) -> None:
        return None

    def finish(self, status: str = "FINISHED") -> TrackingResult:
        return TrackingResult()


class BestModel:
    """Keeps the best global model seen so far by one metric (plain data, checkpointable)."""

    def __init__(self, metric: str, mode: str = "max") -> None:
        self.metric = metric
        self.mode = mode
        self.round: int | None = None
        self.weights: Weights | None = None
        self.metrics: dict[str, float] = {}

    def offer(self, rnd: int, weights: Weights, metrics: dict[str, float]) -> bool:
        value = metrics.get(self.metric)
        if value is None or not math.isfinite(value):
            # Without the selection metric the newest model is the best we know.
            if self.metrics.get(self.metric) is not None:
                return False
        elif self.metrics.get(self.metric) is not None:
            best = self.metrics[self.metric]
            better = value > best if self.mode == "max" else value < best
            if not better:
                return False
        self.round, self.weights, self.metrics = rnd, copy_weights(weights), dict(metrics)
        return True


def _flatten(prefix: str, value: Any, out: dict[str, str]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = str(value)[:6000]


class MlflowTracker:
    def __init__(
        self,
        *,
        tracking_uri: str,
        experiment: str,
        run_name: str,
        selection_metric: str = "accuracy",
        mode: str = "max",
        register_as: str | None = None,
        system_metrics_interval: float = 1.0,
        artifact_location: str | None = None,
        prepared_by_platform: bool = False,
        account_wait: float = 300.0,
    ) -> None:
        self.tracking_uri = tracking_uri
        self.artifact_location = artifact_location or local_artifact_location(tracking_uri)
        self._store: RunStore | None = None
        self.experiment = experiment
        self.run_name = run_name
        self.best = BestModel(selection_metric, mode)
        self.register_as = register_as
        self.card: ModelCard | None = None
        self.system_metrics_interval = system_metrics_interval
        # the control plane makes the experiment, the model and our account, beside the job
        self.prepared_by_platform = prepared_by_platform
        self.account_wait = account_wait
        self.run_id: str | None = None
        self._experiment_id: str | None = None
        self._sampler: SystemSampler | None = None
        self._unsent: list[MetricPoint] = []  # round metrics not yet sent (see flush)
        self._model_files: dict[str, str] = {}  # best_model's files sent: path -> SHA-256

    @property
    def store(self) -> RunStore:
        """Where the run goes, made on first use (on :class:`BackgroundTracker`'s thread)."""
        if self._store is None:
            self._store = store_for(self.tracking_uri)
        return self._store

    def start(self, params: dict[str, Any], tags: dict[str, str]) -> None:
        exp_id = self._when_ready(
            lambda: self.store.experiment(
                self.experiment, self.artifact_location, create=not self.prepared_by_platform
            )
        )
        self.run_id = self.store.create_run(exp_id, self.run_name, tags)
        self._experiment_id = exp_id
        flat: dict[str, str] = {}
        _flatten("", params, flat)
        items = sorted(flat.items())
        for i in range(0, len(items), 100):  # MLflow caps a batch at 100 params
            self.store.log_batch(self.run_id, params=items[i : i + 100])
        from flame.system_metrics import SystemSampler  # psutil: only a tracked run needs it

        self._sampler = SystemSampler(self.system_metrics_interval)
        self._sampler.start()
        log.info("tracking.started", run_id=self.run_id, uri=self.tracking_uri)
        if self.card is not None:
            self._send_fixed_model_files()

    def _when_ready(self, call: Callable[[], str]) -> str:
        """``call``, again while the control plane is still making the job's account (401),
        its grant (403) and experiment (404) beside the job's deployment: the job's aggregator
        may ask first. Gives up after ``account_wait`` seconds (a wrong login stays refused)."""
        waiting = {401, 403, 404} if self.prepared_by_platform else set()
        backoff = Backoff(0.1, 2.0)
        deadline = time.monotonic() + self.account_wait
        while True:
            try:
                return call()
            except StoreError as exc:
                if exc.status not in waiting or time.monotonic() >= deadline:
                    raise
                log.info("tracking.waiting_for_account", uri=self.tracking_uri)
                time.sleep(min(backoff.next(), max(0.0, deadline - time.monotonic())))

    def log_round(self, rnd: int, metrics: dict[str, float]) -> None:
        """Keep a round's metrics for the next :meth:`flush` (one request for every round that
        waited: a worker that fell behind catches up in one call, not one per round)."""
        if self.run_id is None:
            raise RuntimeError("tracker not started")
        now = int(time.time() * 1000)
        self._unsent += [
            MetricPoint(k, float(v), now, rnd) for k, v in metrics.items() if math.isfinite(v)
        ]

    def flush(self) -> None:
        """Send the metrics :meth:`log_round` kept, with the system samples taken since the
        last flush, in order. MLflow refuses a whole batch for one bad name: a refused batch is
        sent again round by round, and a round it still refuses is logged and dropped, so it
        neither holds up nor takes down the others."""
        if self.run_id is None:
            return
        if self._sampler is not None:
            self._unsent += self._sampler.take()
        while self._unsent:
            batch = self._unsent[:1000]  # MLflow caps a batch at 1000 metrics
            del self._unsent[: len(batch)]
            try:
                self.store.log_batch(self.run_id, metrics=batch)
            except Exception:
                for step in sorted({m.step for m in batch}):
                    try:
                        self.store.log_batch(
                            self.run_id, metrics=[m for m in batch if m.step == step]
                        )
                    except Exception as exc:
                        log.warning("tracking.round_refused", step=step, error=str(exc))

    def log_json(self, name: str, data: dict[str, Any]) -> None:
        """A JSON artifact of the run (a job kind's result: statistics, a cross-site matrix)."""
        if self.run_id is None:
            raise RuntimeError("tracker not started")
        self.store.log_text(self.run_id, json.dumps(data, indent=2), name)

    def offer_model(self, rnd: int, weights: Weights, metrics: dict[str, float]) -> None:
        if self.best.offer(rnd, weights, metrics):
            log.info(
                "tracking.best_model",
                round=rnd,
                **{self.best.metric: metrics.get(self.best.metric)},
            )

    def finish(self, status: str = "FINISHED") -> TrackingResult:
        if self.run_id is None:
            return TrackingResult()
        if self._sampler is not None:
            self._sampler.stop()  # its last sample goes with the flush
        with ThreadPoolExecutor(max_workers=1) as pool:  # the last metrics beside the model
            flushed = pool.submit(self.flush)
            if self.best.weights is not None:
                with tempfile.TemporaryDirectory() as tmp:
                    self._send_model_files(self._model_folder(Path(tmp), self.best.weights))
            flushed.result()
        model_uri = self._register_best_model() if self.best.weights is not None else None
        self.store.set_terminated(self.run_id, status)
        result = TrackingResult(
            run_id=self.run_id,
            run_uri=f"{self.tracking_uri}#/experiments/{self._experiment_id}/runs/{self.run_id}",
            model_uri=model_uri,
            best_round=self.best.round,
            best_metrics=dict(self.best.metrics),
        )
        log.info(
            "tracking.finished", run_id=self.run_id, model_uri=model_uri, best_round=self.best.round
        )
        return result

    def describe_model(self, card: ModelCard) -> None:
        self.card = card
        if self.run_id is not None:
            self._send_fixed_model_files()

    def _write_card(self, folder: Path) -> tuple[Path, Path] | None:
        """The role's source and card for the model, or None: it is then logged without a
        way to predict (its weights still), rather than not at all."""
        if self.card is None:
            return None
        try:
            return self.card.write(folder)
        except (OSError, ValueError) as exc:
            log.warning("model.predictor_not_logged", error=f"{type(exc).__name__}: {exc}")
            return None

    def _model_folder(self, tmp: Path, weights: Weights | None) -> Path:
        """The best model's MLflow folder in ``tmp``; without ``weights``, with an empty
        weights file (see :meth:`_send_fixed_model_files`)."""
        weights_file = tmp / "weights.safetensors"
        with weights_file.open("wb") as fh:  # from the weights' own memory: no model-sized copy
            write_safetensors(fh, weights or {})
        artifacts = {"weights": weights_file}
        requirements = ["mlflow", "numpy", "safetensors"]
        examples: dict[str, Any] = {}
        shipped = self._write_card(tmp)
        if self.card is not None and shipped is not None:
            code, card = shipped
            artifacts |= {"code": code, "predictor": card}
            examples = {
                "input_example": np.asarray(self.card.input_example),
                "output_example": np.asarray(self.card.output_example),
            }
            requirements += ["flame-sdk", *_framework_requirements(code)]
        from flame.serving.pyfunc_folder import write_pyfunc_folder  # YAML: only here

        model_dir = tmp / "model"
        write_pyfunc_folder(
            model_dir,
            artifacts,
            requirements=requirements,
            model_metadata={
                "flame_best_round": self.best.round,
                "flame_metrics": self.best.metrics,
            },
            **examples,
        )
        return model_dir

    def _send_model_files(self, folder: Path, *, fixed_only: bool = False) -> None:
        """Log ``folder`` as the run's ``best_model``, leaving out the files already sent
        with the same bytes (and with ``fixed_only`` the two that change with the model:
        its weights and ``MLmodel``)."""
        assert self.run_id is not None
        changing = {"MLmodel", "artifacts/weights.safetensors"}
        sent: dict[str, str] = {}
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            rel = path.relative_to(folder).as_posix()
            if fixed_only and rel in changing:
                path.unlink()
                continue
            # only a file sent before is hashed: never the weights (a 1 GB model at the end)
            digest = _sha256(path) if fixed_only or rel in self._model_files else ""
            if digest and self._model_files.get(rel) == digest:
                path.unlink()
            else:
                sent[rel] = digest
        if sent:
            self.store.log_artifacts(self.run_id, folder, "best_model")
        self._model_files |= sent

    def _send_fixed_model_files(self) -> None:
        """Send the files of the best model that do not depend on its weights (the role's
        code, its card, the environment, the input example) as soon as the run and the card
        are known, while the job runs: at its end, on cores shared with the ending tasks,
        only the weights and ``MLmodel`` are left to send (each request to the tracking server
        took 0.1-0.4 s there). A failure here costs nothing: the end sends what is missing."""
        try:
            with tempfile.TemporaryDirectory() as tmp:
                self._send_model_files(self._model_folder(Path(tmp), None), fixed_only=True)
        except Exception as exc:  # the end tries again
            log.warning("tracking.model_files_not_sent", error=repr(exc))

    def _register_best_model(self) -> str:
        assert self.run_id is not None
        source = f"runs:/{self.run_id}/best_model"
        if not self.register_as:
            return source
        version = self.store.register(self.register_as, source, self.run_id)
        self.store.set_alias(self.register_as, "best", version)
        return f"models:/{self.register_as}@best"


class _NotAccepted(Exception):
    """The control plane did not take a report now (down, restarting, overloaded): retry."""


RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
MAX_REPORT_METRICS = 10_000  # values per request the apiserver takes
MERGED_BATCHES = 256  # rounds per request at most


class ControlPlaneReporter:
    """Sends round metrics (and at the end the run/model URIs) to the apiserver so that
    ``flamectl job watch`` shows the curve.

    Nothing reported is dropped: every round's batch goes into an :class:`~flame.outbox.Outbox`
    and leaves it only once the control plane acknowledged it. :meth:`flush` sends what waits,
    the rounds since the last one merged into one request (up to ``MAX_REPORT_METRICS``
    values): a job of short rounds costs the control plane a request per flush, not per round
    (:class:`CompositeTracker` flushes every ``REPORT_FLUSH_SECONDS`` at most). A request it
    does not take now (a transport error, 429 or 5xx while it restarts) stays, in order, and
    is sent again with capped, jittered backoff on later calls; :meth:`finish` keeps trying up
    to ``drain_timeout`` seconds. The control plane keeps one value per task, metric and step, so
    a batch sent twice (acknowledged, but the answer was lost) counts once. A round it refuses
    (4xx: it would be refused again) is logged and dropped, and only that round: when a merged
    request is refused, its rounds go again one by one. Calls never sleep except in
    :meth:`finish`, so the round path (or the worker thread it runs on) is never held up.
    Batches beyond ``memory_limit`` wait in ``spill`` (a file in the task's folder)."""

    def __init__(
        self,
        url: str,
        token: str,
        task_id: str,
        timeout: float = 5.0,
        security: Security = PLAINTEXT,
        *,
        spill: Path | None = None,
        memory_limit: int = 256,
        retry_initial: float = 0.2,
        retry_max: float = 10.0,
        drain_timeout: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.http = sync_http_client(url, security, token=token, timeout=timeout)
        self.path = f"/v1/agent/tasks/{task_id}/metrics"
        self.outbox = Outbox(spill, memory_limit)
        self._backoff = Backoff(retry_initial, retry_max)
        self._next_try = 0.0
        self._drain_timeout = drain_timeout
        self._clock = clock
        self._sleep = sleep
        self._one_by_one = 0  # the next batches go alone (a merged request was refused)

    def _post(self, body: dict[str, Any]) -> bool:
        """Send one request: True when taken, False when refused; :class:`_NotAccepted` when
        it is worth sending again."""
        try:
            resp = self.http.post(self.path, json=body)
        except httpx.TransportError as exc:
            raise _NotAccepted(str(exc) or type(exc).__name__) from exc
        if resp.status_code in RETRY_STATUS:
            raise _NotAccepted(f"HTTP {resp.status_code}")
        if resp.status_code >= 400:
            log.warning("metrics.refused", status=resp.status_code, body=resp.text[:200])
            return False
        return True

    def _next(self) -> tuple[dict[str, Any], int]:
        """The next request: the oldest batch, with the rounds after it merged in (metrics
        only, up to ``MAX_REPORT_METRICS`` values), and how many batches it holds."""
        batches = self.outbox.peek_many(1 if self._one_by_one else MERGED_BATCHES)
        merged: list[dict[str, Any]] = []
        count = 0
        for batch in batches:
            if batch.keys() != {"metrics"}:
                break
            if len(merged) + len(batch["metrics"]) > MAX_REPORT_METRICS:
                break
            merged.extend(batch["metrics"])
            count += 1
        if count <= 1:
            return batches[0], 1
        return {"metrics": merged}, count

    def _flush(self) -> bool:
        """Send what waits, oldest first, until one is not accepted; True when all went."""
        while len(self.outbox):
            body, count = self._next()
            try:
                taken = self._post(body)
            except _NotAccepted as exc:
                delay = self._backoff.next()
                self._next_try = self._clock() + delay
                log.info("metrics.report_retry", error=str(exc), waiting=len(self.outbox))
                return False
            self._backoff.reset()
            if not taken and count > 1:  # one of them is refused: each goes on its own
                self._one_by_one = count
                continue
            self.outbox.pop(count)
            self._one_by_one = max(0, self._one_by_one - count)
        return True

    def flush(self) -> None:
        """Send what waits, unless a refusal's backoff has not run out."""
        if self._clock() >= self._next_try:
            self._flush()

    def _report(self, body: dict[str, Any]) -> None:
        self.outbox.put(body)
        self.flush()

    def start(self, params: dict[str, Any], tags: dict[str, str]) -> None:
        return None

    def log_round(self, rnd: int, metrics: dict[str, float]) -> None:
        at = datetime.now(UTC).isoformat()  # when the round ended, not when the flush went
        items = [
            {"key": k, "value": float(v), "step": rnd, "at": at}
            for k, v in metrics.items()
            if math.isfinite(v)
        ]
        self.outbox.put({"metrics": items})  # sent by the next flush

    def offer_model(self, rnd: int, weights: Weights, metrics: dict[str, float]) -> None:
        return None

    def log_json(self, name: str, data: dict[str, Any]) -> None:
        return None  # the control plane keeps metrics; the report is in MLflow

    def describe_model(self, card: ModelCard) -> None:
        return None

    def drain(self) -> bool:
        """Keep sending what waits until it is all acknowledged or ``drain_timeout`` passed;
        True when nothing is left."""
        end = self._clock() + self._drain_timeout
        while not self._flush():
            left = end - self._clock()
            if left <= 0:
                log.error("metrics.report_lost", batches=len(self.outbox))
                return False
            self._sleep(min(max(0.0, self._next_try - self._clock()), left))
        return True

    def finish(self, status: str = "FINISHED") -> TrackingResult:
        self.drain()
        self.http.close()
        return TrackingResult()

    def report_result(self, result: TrackingResult) -> None:
        self._report(
            {"metrics": [], "run_uri": result.run_uri or "", "model_uri": result.model_uri or ""}
        )


#: How often a job's round metrics (and system samples) go to MLflow at most: its UI refreshes
#: no faster, and a 20-round job of 3 ms rounds then costs the tracking server a few requests.
MLFLOW_FLUSH_SECONDS = 1.0
#: The same for the control plane's copy (``flamectl job watch``, the dashboard's curves, and
#: whatever waits on a round there): a request per round was two services' work per round on
#: the cores the rounds run on; a quarter second keeps the curve that close to the job.
REPORT_FLUSH_SECONDS = 0.25


class CompositeTracker:
    """MLflow (its result is the job's) and the control-plane reporter, each on its own
    :class:`BackgroundTracker` worker: a slow or failing MLflow never delays or drops the curve
    ``flamectl job watch`` shows."""

    def __init__(self, primary: Tracker, reporter: ControlPlaneReporter | None) -> None:
        self.primary = BackgroundTracker(primary, flush_every=MLFLOW_FLUSH_SECONDS)
        self.reporter = reporter
        self._reports = (
            BackgroundTracker(reporter, flush_every=REPORT_FLUSH_SECONDS)
            if reporter is not None
            else None
        )

    def start(self, params: dict[str, Any], tags: dict[str, str]) -> None:
        self.primary.start(params, tags)

    def log_round(self, rnd: int, metrics: dict[str, float]) -> None:
        self.primary.log_round(rnd, metrics)
        if self._reports is not None:
            self._reports.log_round(rnd, metrics)

    def offer_model(self, rnd: int, weights: Weights, metrics: dict[str, float]) -> None:
        self.primary.offer_model(rnd, weights, metrics)

    def log_json(self, name: str, data: dict[str, Any]) -> None:
        self.primary.log_json(name, data)

    def describe_model(self, card: ModelCard) -> None:
        self.primary.describe_model(card)

    def finish(self, status: str = "FINISHED") -> TrackingResult:
        result = self.primary.finish(status)
        if self._reports is not None and self.reporter is not None:
            reporter = self.reporter
            self._reports.call(lambda: reporter.report_result(result))
            self._reports.finish(status)
        return result


class BackgroundTracker:
    """Runs another tracker's calls on one worker thread, in order, so tracking I/O (an MLflow
    ``log_batch``, the metrics POST) never sits on the training round's path. When the queue
    runs empty it calls the inner tracker's ``flush``, if it has one, at most once every
    ``flush_every`` seconds: what the inner tracker batched goes out then, in one request for
    every round since the last (a round every few milliseconds would otherwise cost the
    tracking server a request each, on the cores the rounds run on). ``finish`` drains the
    queue and returns the inner result. A failing call is logged and the job goes on: losing a
    metric must not lose the training run."""

    def __init__(self, inner: Tracker, flush_every: float = 0.0) -> None:
        self.inner = inner
        self.flush_every = flush_every
        self._calls: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._worker = threading.Thread(target=self._drain, name="flame-tracking", daemon=True)
        self._worker.start()

    def _drain(self) -> None:
        flush = getattr(self.inner, "flush", None)  # sends what the inner tracker batched
        due = 0.0  # when the next flush may go (monotonic)
        unsent = False  # calls ran since the last flush
        while True:
            wait = max(0.0, due - time.monotonic()) if unsent else None
            try:
                call = self._calls.get(timeout=wait)
            except queue.Empty:
                pass  # woken for the flush that waited for its time
            else:
                if call is None:
                    return
                self._run(call)
                unsent = flush is not None
            if unsent and self._calls.empty() and time.monotonic() >= due:
                assert flush is not None
                self._run(flush)
                unsent = False
                due = time.monotonic() + self.flush_every

    @staticmethod
    def _run(call: Callable[[], None]) -> None:
        try:
            call()
        except Exception as exc:
            log.warning("tracking.call_failed", error=repr(exc))

    def call(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the worker, after everything queued before it."""
        self._calls.put(fn)

    def start(self, params: dict[str, Any], tags: dict[str, str]) -> None:
        self._calls.put(lambda: self.inner.start(params, tags))

    def log_round(self, rnd: int, metrics: dict[str, float]) -> None:
        values = dict(metrics)
        self._calls.put(lambda: self.inner.log_round(rnd, values))

    def offer_model(self, rnd: int, weights: Weights, metrics: dict[str, float]) -> None:
        snapshot, values = copy_weights(weights), dict(metrics)  # the caller goes on mutating
        self._calls.put(lambda: self.inner.offer_model(rnd, snapshot, values))

    def log_json(self, name: str, data: dict[str, Any]) -> None:
        self._calls.put(lambda: self.inner.log_json(name, data))

    def describe_model(self, card: ModelCard) -> None:
        self._calls.put(lambda: self.inner.describe_model(card))

    def finish(self, status: str = "FINISHED") -> TrackingResult:
        self._calls.put(None)
        self._worker.join()
        return self.inner.finish(status)


def default_tracking_uri(workdir: str | Path) -> str:
    return f"sqlite:///{Path(workdir).resolve() / 'mlflow.db'}"


def local_artifact_location(tracking_uri: str) -> str | None:
    """For a store in a local SQLite file, its artifacts in ``mlartifacts/`` beside it (MLflow
    would otherwise put them in ``./mlruns`` of whatever the current directory is); a tracking
    server decides for itself (None)."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    db = Path(tracking_uri.removeprefix("sqlite:///"))
    if not db.is_absolute() or str(db) == ":memory:":
        return None
    return (db.parent / "mlartifacts").as_uri()


def _sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _framework_requirements(code: Path) -> list[str]:
    """torch when the role's code uses it (the model is rebuilt by that code)."""
    uses_torch = any("import torch" in p.read_text(errors="replace") for p in code.rglob("*.py"))
    return ["torch"] if uses_torch else []


def make_tracker(config: TaskConfig) -> Tracker:
    """The tracker for one task: MLflow (unless the job turned it off) and the control plane's
    metrics for the top aggregator, nothing for everyone else. The caller decides whether this
    task is the top aggregator."""
    spec: TrackingSpec = config.job.tracking
    access = config.tracking  # the names and account the control plane made for this job
    if access.username and access.password:  # MLflow's client reads its login from here
        os.environ["MLFLOW_TRACKING_USERNAME"] = access.username
        os.environ["MLFLOW_TRACKING_PASSWORD"] = access.password
    mlflow_tracker: Tracker = NullTracker()
    if spec.enabled:
        mlflow_tracker = MlflowTracker(
            tracking_uri=config.tracking_uri or default_tracking_uri(config.workdir),
            experiment=access.experiment or spec.experiment or config.job_name,
            run_name=f"{config.job_name}-{config.job_id[:8]}",
            selection_metric=spec.selection_metric,
            mode=spec.mode,
            register_as=(access.model_name or config.job_name) if spec.register_model else None,
            prepared_by_platform=bool(access.experiment and access.username),
        )
    disc = config.discovery
    reporter = None
    if disc.kind == "control-plane" and disc.url and disc.token:
        reporter = ControlPlaneReporter(
            disc.url,
            disc.token,
            config.task_id,
            security=Security.of(config),
            spill=Path(config.workdir) / "metrics-outbox.jsonl",
        )
    return CompositeTracker(mlflow_tracker, reporter)


def tracking_tags(config: TaskConfig) -> dict[str, str]:
    return {
        "flame.job_id": config.job_id,
        "flame.job_name": config.job_name,
        "flame.design": config.design_name,
        "flame.owner": config.owner,
        "flame.task_id": config.task_id,
    }
