"""Where :class:`~flame.tracking.MlflowTracker` writes: an MLflow tracking store, reached either
over MLflow's REST API (a tracking server) or through ``MlflowClient`` (any other URI).

A job's top aggregator talks to a tracking server. Importing MLflow costs about 2 s of CPU and
180 MB in every such aggregator, and on a small machine that time comes out of the rounds
(issue 21), so :class:`RestStore` speaks the server's REST API with httpx: runs, batches,
artifacts through the server's artifact proxy (``mlflow-artifacts:``) and the model registry.
Only an artifact root the proxy does not serve (``s3://`` on a server without
``--serve-artifacts``, say) falls back to MLflow's own client for the upload. A URI that is
not a server (``sqlite:///...``, a folder: local simulations) goes through
:class:`ClientStore`, which imports MLflow. Both take the same calls and keep the same things.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple, Protocol
from urllib.parse import quote, urlparse

import httpx

from flame.connect import mlflow_http_client

API = "/api/2.0/mlflow"
ARTIFACTS = "/api/2.0/mlflow-artifacts/artifacts"
_MISSING = "RESOURCE_DOES_NOT_EXIST"
_EXISTS = "RESOURCE_ALREADY_EXISTS"


class MetricPoint(NamedTuple):
    key: str
    value: float
    timestamp: int  # ms since the epoch
    step: int


class StoreError(Exception):
    """The tracking store refused a call (``status``: its HTTP status) or could not be reached
    (``status`` None)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class RunStore(Protocol):
    def experiment(self, name: str, artifact_location: str | None, *, create: bool = True) -> str:
        """The id of experiment ``name``, made when it does not exist (else StoreError 404)."""

    def create_run(self, experiment_id: str, run_name: str, tags: dict[str, str]) -> str: ...

    def log_batch(
        self,
        run_id: str,
        metrics: Sequence[MetricPoint] = (),
        params: Sequence[tuple[str, str]] = (),
    ) -> None: ...

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None: ...

    def log_artifacts(self, run_id: str, local_dir: Path, artifact_path: str) -> None: ...

    def register(self, name: str, source: str, run_id: str) -> str:
        """A new version of registered model ``name`` (made when missing); its number."""

    def set_alias(self, name: str, alias: str, version: str) -> None: ...

    def set_terminated(self, run_id: str, status: str) -> None: ...


def store_for(tracking_uri: str) -> RunStore:
    """REST for a tracking server, MLflow's client for everything else."""
    if urlparse(tracking_uri).scheme in ("http", "https"):
        return RestStore(tracking_uri)
    return ClientStore(tracking_uri)


def _now_ms() -> int:
    return int(time.time() * 1000)


class RestStore:
    """A tracking server over its REST API, with the login MLflow's client would use: the
    ``MLFLOW_TRACKING_USERNAME``/``_PASSWORD`` (or ``_TOKEN``) environment, the server's
    certificate from ``MLFLOW_TRACKING_SERVER_CERT_PATH``."""

    def __init__(self, uri: str, *, transport: httpx.BaseTransport | None = None) -> None:
        self.uri = uri.rstrip("/")
        self._http = mlflow_http_client(self.uri, timeout=60.0, transport=transport)
        self._artifact_uris: dict[str, str] = {}  # run id -> its artifact root

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, **kw: Any) -> tuple[int, dict[str, Any]]:
        try:
            resp = self._http.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise StoreError(f"{self.uri} cannot be reached: {exc}") from exc
        try:
            body = resp.json() if resp.content else {}
        except ValueError:
            body = {"message": resp.text[:300]}
        return resp.status_code, body if isinstance(body, dict) else {}

    def _ok(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        code, body = self._call(method, path, **kw)
        if code != 200:
            raise StoreError(f"{method} {path}: HTTP {code}: {body.get('message', body)}", code)
        return body

    def experiment(self, name: str, artifact_location: str | None, *, create: bool = True) -> str:
        path = f"{API}/experiments/get-by-name"
        code, body = self._call("GET", path, params={"experiment_name": name})
        if code == 200:
            return str(body["experiment"]["experiment_id"])
        if body.get("error_code") != _MISSING or not create:
            raise StoreError(f"GET {path}: HTTP {code}: {body.get('message', body)}", code)
        request: dict[str, Any] = {"name": name}
        if artifact_location:
            request["artifact_location"] = artifact_location
        code, body = self._call("POST", f"{API}/experiments/create", json=request)
        if code == 200:
            return str(body["experiment_id"])
        if body.get("error_code") == _EXISTS:  # made meanwhile by someone else
            return self.experiment(name, artifact_location, create=False)
        raise StoreError(f"cannot create experiment {name!r}: HTTP {code}: {body}")

    def create_run(self, experiment_id: str, run_name: str, tags: dict[str, str]) -> str:
        body = self._ok(
            "POST",
            f"{API}/runs/create",
            json={
                "experiment_id": experiment_id,
                "run_name": run_name,
                "start_time": _now_ms(),
                "tags": [{"key": k, "value": v} for k, v in tags.items()],
            },
        )
        info = body["run"]["info"]
        self._artifact_uris[info["run_id"]] = info["artifact_uri"]
        return str(info["run_id"])

    def log_batch(
        self,
        run_id: str,
        metrics: Sequence[MetricPoint] = (),
        params: Sequence[tuple[str, str]] = (),
    ) -> None:
        self._ok(
            "POST",
            f"{API}/runs/log-batch",
            json={
                "run_id": run_id,
                "metrics": [m._asdict() for m in metrics],
                "params": [{"key": k, "value": v} for k, v in params],
            },
        )

    def _artifact_root(self, run_id: str) -> str:
        if run_id not in self._artifact_uris:
            body = self._ok("GET", f"{API}/runs/get", params={"run_id": run_id})
            self._artifact_uris[run_id] = body["run"]["info"]["artifact_uri"]
        return self._artifact_uris[run_id]

    def _put(self, root: str, rel: str, data: bytes | Path) -> None:
        """Upload ``data`` (a file is streamed, never read whole) as ``rel`` under ``root``."""
        folder = urlparse(root).path.lstrip("/")  # mlflow-artifacts:/<exp>/<run>/artifacts
        path = f"{ARTIFACTS}/{quote(f'{folder}/{rel}')}"
        if isinstance(data, bytes):
            self._ok("PUT", path, content=data)
            return
        with data.open("rb") as stream:
            self._ok("PUT", path, content=stream)

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        root = self._artifact_root(run_id)
        if not root.startswith("mlflow-artifacts:"):
            ClientStore(self.uri).log_text(run_id, text, artifact_file)
            return
        self._put(root, artifact_file, text.encode())

    def log_artifacts(self, run_id: str, local_dir: Path, artifact_path: str) -> None:
        root = self._artifact_root(run_id)
        if not root.startswith("mlflow-artifacts:"):  # only MLflow's own client can write there
            ClientStore(self.uri).log_artifacts(run_id, local_dir, artifact_path)
            return
        files = sorted(p for p in local_dir.rglob("*") if p.is_file())
        # a model folder is about ten small files: one round trip each, a few at a time
        with ThreadPoolExecutor(max_workers=4) as pool:
            rel = [f"{artifact_path}/{f.relative_to(local_dir).as_posix()}" for f in files]
            for upload in [
                pool.submit(self._put, root, r, f) for r, f in zip(rel, files, strict=True)
            ]:
                upload.result()

    def register(self, name: str, source: str, run_id: str) -> str:
        version = {"name": name, "source": source, "run_id": run_id}
        code, body = self._call("POST", f"{API}/model-versions/create", json=version)
        if code != 200 and body.get("error_code") == _MISSING:
            # the control plane makes the model beforehand; another server may not have it
            code, body = self._call("POST", f"{API}/registered-models/create", json={"name": name})
            if code != 200 and body.get("error_code") != _EXISTS:
                raise StoreError(f"cannot create registered model {name!r}: HTTP {code}: {body}")
            code, body = self._call("POST", f"{API}/model-versions/create", json=version)
        if code != 200:
            raise StoreError(f"cannot register {source} as {name!r}: HTTP {code}: {body}")
        return str(body["model_version"]["version"])

    def set_alias(self, name: str, alias: str, version: str) -> None:
        self._ok(
            "POST",
            f"{API}/registered-models/alias",
            json={"name": name, "alias": alias, "version": version},
        )

    def set_terminated(self, run_id: str, status: str) -> None:
        self._ok(
            "POST",
            f"{API}/runs/update",
            json={"run_id": run_id, "status": status, "end_time": _now_ms()},
        )


class ClientStore:
    """Any store MLflow's own client reaches (a local SQLite file for simulations)."""

    def __init__(self, uri: str) -> None:
        from mlflow import MlflowClient

        self._client = MlflowClient(tracking_uri=uri, registry_uri=uri)

    def experiment(self, name: str, artifact_location: str | None, *, create: bool = True) -> str:
        exp = self._client.get_experiment_by_name(name)
        if exp is not None:
            return str(exp.experiment_id)
        if not create:
            raise StoreError(f"no experiment {name!r}", 404)
        return str(self._client.create_experiment(name, artifact_location=artifact_location))

    def create_run(self, experiment_id: str, run_name: str, tags: dict[str, str]) -> str:
        return str(self._client.create_run(experiment_id, run_name=run_name, tags=tags).info.run_id)

    def log_batch(
        self,
        run_id: str,
        metrics: Sequence[MetricPoint] = (),
        params: Sequence[tuple[str, str]] = (),
    ) -> None:
        from mlflow.entities import Metric, Param

        self._client.log_batch(
            run_id,
            metrics=[Metric(m.key, m.value, m.timestamp, m.step) for m in metrics],
            params=[Param(k, v) for k, v in params],
        )

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        self._client.log_text(run_id, text, artifact_file)

    def log_artifacts(self, run_id: str, local_dir: Path, artifact_path: str) -> None:
        self._client.log_artifacts(run_id, str(local_dir), artifact_path)

    def register(self, name: str, source: str, run_id: str) -> str:
        from mlflow.exceptions import MlflowException

        try:
            self._client.get_registered_model(name)
        except MlflowException:
            self._client.create_registered_model(name)
        return str(self._client.create_model_version(name, source=source, run_id=run_id).version)

    def set_alias(self, name: str, alias: str, version: str) -> None:
        self._client.set_registered_model_alias(name, alias, version)

    def set_terminated(self, run_id: str, status: str) -> None:
        self._client.set_terminated(run_id, status=status)
