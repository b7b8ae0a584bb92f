"""``flamectl model``: the registered models of your jobs on the platform's MLflow server.

Every command signs in to MLflow with your own tracking login (``flamectl tracking
credentials``), so MLflow itself decides what you may see: your jobs' models, nothing else. That
login only reads: ``alias`` goes through the apiserver, which checks the model is your job's. A
model you may not read is reported as not found, as the API
does for other tenants' resources. ``serve`` downloads the model and runs MLflow's scoring
server on it, in this Python environment.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from flame.cli.client import ApiError
from flame.cli.common import group, session
from flame.cli.interrupt import wait_for_interrupt
from flame.cli.output import Format, OutputOpt, render
from flame.cli.resources import Resource
from flame_spec.privacy import NO_TELEMETRY

app = group("Registered models of your jobs (on the platform's MLflow server).")


class ModelInfo(Resource):
    name: str
    aliases: dict[str, str] = {}
    latest_version: str = ""
    description: str = ""


class VersionInfo(Resource):
    name: str
    version: str
    aliases: list[str] = []
    run_id: str = ""
    status: str = ""
    source: str = ""


@contextmanager
def _registry() -> Iterator[Any]:
    """An MlflowClient signed in as this flamectl user (MLflow's client reads its login from the
    environment; it is set for this process only)."""
    with session() as client:
        login = client.tracking_credentials()
    os.environ["MLFLOW_TRACKING_URI"] = os.environ["MLFLOW_REGISTRY_URI"] = login.uri
    os.environ["MLFLOW_TRACKING_USERNAME"] = login.username
    os.environ["MLFLOW_TRACKING_PASSWORD"] = login.password
    os.environ.update(NO_TELEMETRY)
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        yield MlflowClient(tracking_uri=login.uri, registry_uri=login.uri)
    except MlflowException as exc:
        if exc.error_code in ("PERMISSION_DENIED", "RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"):
            raise ApiError(404, "not_found", "no such model, or it is not yours") from None
        raise ApiError(502, "tracking_error", f"the tracking server said: {exc.message}") from None


def _split(ref: str) -> tuple[str, str | None]:
    name, _, alias = ref.partition("@")
    if not name:
        raise ApiError(400, "invalid_argument", f"{ref!r} is not NAME or NAME@ALIAS")
    return name, alias or None


def _version(registry: Any, ref: str) -> Any:
    name, alias = _split(ref)
    if alias is not None:
        return registry.get_model_version_by_alias(name, alias)
    versions = registry.search_model_versions(f"name = '{name}'")
    if not versions:
        raise ApiError(404, "not_found", f"model {name!r} has no versions")
    return max(versions, key=lambda v: int(v.version))


def _version_info(v: Any) -> VersionInfo:
    return VersionInfo(
        name=v.name,
        version=str(v.version),
        aliases=list(v.aliases or []),
        run_id=v.run_id or "",
        status=str(v.status or ""),
        source=v.source or "",
    )


@app.command("list")
def list_(output: OutputOpt = Format.table) -> None:
    """Your jobs' registered models, with their aliases."""
    with _registry() as registry:
        models = [
            ModelInfo(
                name=m.name,
                aliases={k: str(v) for k, v in (m.aliases or {}).items()},
                latest_version=max((str(v.version) for v in m.latest_versions or []), default=""),
                description=m.description or "",
            )
            for m in registry.search_registered_models()
        ]
    render(models, output, ("name", "aliases", "latest_version"))


@app.command("versions")
def versions(name: str, output: OutputOpt = Format.table) -> None:
    """The versions of one model, newest first."""
    with _registry() as registry:
        registry.get_registered_model(name)  # not yours: not found
        found = registry.search_model_versions(f"name = '{name}'")
        items = sorted((_version_info(v) for v in found), key=lambda v: -int(v.version))
    render(items, output, ("version", "aliases", "status", "run_id"))


@app.command("get")
def get(
    ref: Annotated[str, typer.Argument(help="NAME or NAME@ALIAS (default: the newest version)")],
    output: OutputOpt = Format.table,
) -> None:
    """One model version: its run and aliases."""
    with _registry() as registry:
        render(_version_info(_version(registry, ref)), output)


@app.command("alias")
def alias(
    name: str,
    version: str,
    alias: Annotated[str, typer.Argument(help="e.g. prod; an existing alias moves")],
) -> None:
    """Point ALIAS of a model at one of its versions (NAME@ALIAS then loads that version).

    Through the apiserver: your MLflow login only reads; ``@best`` stays the job's selection."""
    with session() as client:
        got = client.set_model_alias(name, alias, version)
    typer.echo(f"{got['model']}@{got['alias']} -> version {got['version']}")


def _download(registry: Any, version: Any, target: Path) -> Path:
    import mlflow.artifacts

    target.mkdir(parents=True, exist_ok=True)
    uri = f"models:/{version.name}/{version.version}"
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(target)))


@app.command("serve")
def serve(
    ref: Annotated[str, typer.Argument(help="NAME or NAME@ALIAS (default: the newest version)")],
    port: Annotated[int, typer.Option(help="port of the inference endpoint")] = 5001,
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
) -> None:
    """Serve a model over HTTP until Ctrl-C: POST /invocations {"inputs": [[...]]}."""
    from flame.serving import scoring

    with tempfile.TemporaryDirectory(prefix="flame-serve-") as tmp:
        with _registry() as registry:
            version = _version(registry, ref)
            path = _download(registry, version, Path(tmp))
        proc = scoring.start(path, host=host, port=port)
        url = f"http://{host}:{port}"
        try:
            try:
                scoring.wait_ready(url, proc)
            except scoring.ScoringError as exc:
                raise ApiError(503, "unavailable", str(exc)) from None
            typer.echo(f"serving {version.name} version {version.version} at {url}/invocations")
            typer.echo("press Ctrl-C to stop", err=True)
            ended = threading.Event()  # the server stopping by itself ends the wait too

            def watch() -> None:
                proc.wait()
                ended.set()

            threading.Thread(target=watch, daemon=True).start()
            wait_for_interrupt(ended)
        finally:
            scoring.stop(proc)


@app.command("download")
def download(
    ref: Annotated[str, typer.Argument(help="NAME or NAME@ALIAS (default: the newest version)")],
    to: Annotated[Path, typer.Option("--to", help="folder to write the model into")] = Path(),
) -> None:
    """Write the model (MLflow pyfunc folder with its safetensors weights) into a folder."""
    with _registry() as registry:
        version = _version(registry, ref)
        target = to.expanduser().resolve() / f"{version.name}-v{version.version}"
        if target.exists() and any(target.iterdir()):
            raise ApiError(409, "already_exists", f"{target} exists and is not empty")
        path = _download(registry, version, target)
    weights = sorted(path.rglob("*.safetensors"))
    typer.echo(f"model {version.name} version {version.version} written to {path}")
    for w in weights:
        typer.echo(f"  weights: {w}")
