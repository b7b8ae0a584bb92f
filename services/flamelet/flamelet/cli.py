"""``flamelet``: enrol this node, register datasets, run the agent."""

from __future__ import annotations

import asyncio
import os
import platform
import re
import signal
import socket
import sys
from pathlib import Path
from typing import Annotated

import typer

from flame_service.connect import PLAINTEXT, Security
from flame_service.logging import configure_logging
from flame_service.metrics_endpoint import start_metrics_server
from flamelet.agent import Agent
from flamelet.api import RestClient
from flamelet.errors import FlameletError, Unauthorized
from flamelet.events import GrpcEventSource
from flamelet.home import DatasetRegistry, Identity, LocalDataset, dataset_size
from flamelet.observability import flamelet_registry
from flamelet.samples import count_samples
from flamelet.settings import FlameletSettings

app = typer.Typer(help="Flame node agent", no_args_is_help=True, add_completion=False)
dataset_app = typer.Typer(help="Datasets held on this node (the data never leaves it)")
app.add_typer(dataset_app, name="dataset")

HomeOpt = Annotated[
    Path | None,
    typer.Option("--home", help="state folder (default $FLAMELET_HOME or ~/.flamelet)"),
]


def _settings(home: Path | None) -> FlameletSettings:
    settings = FlameletSettings()
    if home is not None:
        settings = settings.model_copy(update={"home": home.expanduser().resolve()})
    return settings


def _fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(1)


@app.command()
def login(
    server: Annotated[str, typer.Option(help="apiserver URL, e.g. http://127.0.0.1:10100")],
    token: Annotated[
        str | None,
        typer.Option(help="the node's one-time enrolment token (prefer --token-file)"),
    ] = None,
    token_file: Annotated[
        Path | None,
        typer.Option("--token-file", help="read the token from this file ('-': stdin)"),
    ] = None,
    ca_file: Annotated[
        Path | None,
        typer.Option(
            "--ca-file",
            help="PEM of the CA that signed the control plane's certificates (kept with the "
            "identity); default: $FLAME_FLAMELET_TLS_CA, else the system's trust store",
        ),
    ] = None,
    home: HomeOpt = None,
) -> None:
    """Enrol this node with an enrolment token and keep its credential (mode 0600). The token
    comes from --token-file, a hidden prompt, or standard input (argv is visible in ps)."""
    settings = _settings(home)
    token = _secret(token, token_file)
    ca_pem = _ca(ca_file or settings.tls_ca)
    security = Security(ca=ca_pem.encode()) if ca_pem else PLAINTEXT
    facts = {
        "hostname": socket.gethostname(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "cpus": str(os.cpu_count() or 0),
    }

    async def enroll() -> Identity:
        client = RestClient(server, timeout=settings.http_timeout, security=security)
        try:
            got = await client.enroll(token, facts)
        finally:
            await client.close()
        return Identity(
            server=server.rstrip("/"),
            node_id=got.node_id,
            credential=got.credential,
            notifier=got.notifier,
            ca_pem=ca_pem,
        )

    try:
        identity = asyncio.run(enroll())
    except FlameletError as exc:
        raise _fail(f"enrolment failed: {exc}") from exc
    identity.save(settings.home)
    typer.echo(f"enrolled as node {identity.node_id}; state in {settings.home}")


def _ca(file: Path | None) -> str | None:
    if file is None:
        return None
    try:
        text = file.read_text()
    except OSError as exc:
        raise _fail(f"cannot read the CA file {file}: {exc.strerror}") from None
    if "-----BEGIN CERTIFICATE-----" not in text:
        raise _fail(f"{file} holds no PEM certificate")
    return text


def _secret(value: str | None, file: Path | None) -> str:
    if file is not None:
        try:
            text = sys.stdin.readline() if str(file) == "-" else file.read_text()
        except OSError as exc:
            raise _fail(f"cannot read the enrolment token from {file}: {exc.strerror}") from None
    elif value:
        typer.echo("warning: a token in the command line is visible to local users (ps)", err=True)
        text = value
    elif sys.stdin.isatty():
        text = typer.prompt("Enrolment token", hide_input=True)
    else:
        text = sys.stdin.readline()
    if not text.strip():
        raise _fail("no enrolment token given")
    return text.strip()


_URI = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)


def _local_source(source: str) -> tuple[str, int, str]:
    """(what the task is given, size in bytes, default format) for a path or a URI.

    A path (or ``file://`` URI) must exist; the task gets its absolute path and the control
    plane its size. Any other ``scheme://...`` is an address the task's code understands (an
    object store, a database, a generated example set such as ``digits://iid/3/0``): it is kept
    as is, on this node, and its size is unknown (0)."""
    if _URI.match(source) and not source.lower().startswith("file://"):
        return source, 0, source.split("://", 1)[0].lower()
    local_path = Path(source.removeprefix("file://")).expanduser().resolve()
    if not local_path.exists():
        raise _fail(f"{local_path} does not exist")
    fmt = "folder" if local_path.is_dir() else local_path.suffix.lstrip(".")
    return str(local_path), dataset_size(local_path), fmt


@dataset_app.command("add")
def dataset_add(
    name: str,
    source: Annotated[
        str,
        typer.Argument(
            metavar="PATH_OR_URI",
            help="a file or folder on this node, or a URI the task's code reads "
            "(e.g. s3://bucket/x, digits://iid/3/0)",
        ),
    ],
    format: Annotated[str, typer.Option("--format", help="e.g. npz, csv, folder")] = "",
    realm: Annotated[str, typer.Option("--realm", help="locality, e.g. eu/hospital-a")] = "",
    description: Annotated[str, typer.Option("--description")] = "",
    samples: Annotated[
        int | None,
        typer.Option(
            "--samples",
            min=0,
            help="training samples (counted for .npz and .csv); no update may claim more",
        ),
    ] = None,
    home: HomeOpt = None,
) -> None:
    """Register a dataset held on this node (its size and sample count are sent; its path or
    URI is not)."""
    settings = _settings(home)
    location, size, default_format = _local_source(source)
    fmt = format or default_format
    samples = _samples(location, fmt, samples)
    try:
        identity = Identity.load(settings.home)
        dataset_id = asyncio.run(
            _register_dataset(identity, settings, name, realm, fmt, size, description, samples or 0)
        )
    except FlameletError as exc:
        raise _fail(f"cannot register dataset {name!r}: {exc}") from exc
    DatasetRegistry(settings.home).add(
        LocalDataset(
            name=name,
            path=location,
            format=fmt,
            realm=realm,
            id=dataset_id,
            size_bytes=size,
            num_samples=samples or 0,
        )
    )
    shown = f"{size} bytes" if size else "size unknown"
    counted = f", {samples} samples" if samples else ""
    typer.echo(
        f"dataset {name} registered as {dataset_id} ({shown}{counted}); {location} stays here"
    )


def _samples(location: str, fmt: str, given: int | None) -> int | None:
    """The sample count to register: as given, else counted for local files, else a warning
    (nothing then bounds what an update may claim)."""
    samples = given
    if samples is None and "://" not in location:
        try:
            samples = count_samples(Path(location), fmt)
        except FlameletError as exc:
            raise _fail(str(exc)) from exc
    if samples is None:
        typer.echo(
            f"warning: cannot count the samples of a {fmt or 'plain'} dataset; pass --samples "
            "so that no update can claim more than it holds",
            err=True,
        )
    return samples


async def _register_dataset(
    identity: Identity,
    settings: FlameletSettings,
    name: str,
    realm: str,
    fmt: str,
    size: int,
    description: str,
    samples: int,
) -> str:
    client = RestClient(
        identity.server, identity.credential, settings.http_timeout, identity.security()
    )
    try:
        found = await client.register_dataset(
            name, realm, fmt, size, description, num_samples=samples
        )
        return found.id
    finally:
        await client.close()


@dataset_app.command("list")
def dataset_list(home: HomeOpt = None) -> None:
    """Datasets registered from this node, with their local paths."""
    settings = _settings(home)
    items = DatasetRegistry(settings.home).all()
    if not items:
        typer.echo("no datasets")
        return
    typer.echo(f"{'NAME':20} {'ID':26} {'FORMAT':8} {'SIZE':>12}  PATH")
    for ds in items.values():
        typer.echo(f"{ds.name:20} {ds.id:26} {ds.format:8} {ds.size_bytes:>12}  {ds.path}")


@app.command()
def run(home: HomeOpt = None) -> None:
    """Run the agent: subscribe, reconcile, run tasks, ship logs and status until stopped."""
    settings = _settings(home)
    try:
        identity = Identity.load(settings.home)
    except FlameletError as exc:
        raise _fail(str(exc)) from exc
    as_json = settings.log_json if settings.log_json is not None else not sys.stderr.isatty()
    configure_logging("flamelet", settings.log_level, as_json)

    async def main() -> None:
        security = identity.security()
        api = RestClient(identity.server, identity.credential, settings.http_timeout, security)
        events = GrpcEventSource(identity.notifier, identity.node_id, identity.credential, security)
        agent = Agent(identity, api, events, settings)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, agent.stop)
        metrics = await start_metrics_server(settings, flamelet_registry(agent))
        try:
            await agent.run()
        finally:
            if metrics is not None:
                await metrics.stop()
            await api.close()
            await events.close()

    try:
        asyncio.run(main())
    except Unauthorized as exc:
        raise _fail(f"the node credential was refused ({exc}); enrol again") from exc
    except FlameletError as exc:
        raise _fail(str(exc)) from exc


if __name__ == "__main__":
    app()
