"""``flamectl job``: create, start, stop, inspect and watch jobs."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from flame.cli.client import FlameClient
from flame.cli.common import ExitCode, group, read_json, resolve_design, resolve_job, session
from flame.cli.output import Format, OutputOpt, plain, render
from flame.cli.resources import Job, Metric
from flame.cli.results import result_tables
from flame.errors import ConfigError

app = group("Jobs: a design + code version + datasets + hyperparameters.")
COLUMNS = ("id", "name", "state", "design_id", "code_version", "created_at")
TASK_COLUMNS = ("id", "role", "index", "state", "node_id", "attempt", "reason")
SpecOpt = Annotated[Path, typer.Option("--spec", exists=True, dir_okay=False, readable=True)]


@app.command("create")
def create(
    name: str,
    design: Annotated[str, typer.Option("--design", "-d", help="design id or name")],
    spec: SpecOpt,
    code_version: Annotated[int, typer.Option(min=0, help="0 = latest")] = 0,
    project: Annotated[str, typer.Option(help="share with this project")] = "",
    output: OutputOpt = Format.table,
) -> None:
    """Create a job from a JSON spec file (it starts with `flamectl job start`)."""
    body = read_json(spec)
    with session() as client:
        found = resolve_design(client, design)
        render(client.create_job(name, found.id, body, code_version, project), output, COLUMNS)


@app.command("list")
def list_(
    project: Annotated[str, typer.Option(help="only this project")] = "",
    output: OutputOpt = Format.table,
) -> None:
    """List jobs."""
    with session() as client:
        render(client.list_jobs(project), output, COLUMNS)


@app.command("get")
def get(job: str, output: OutputOpt = Format.table) -> None:
    """Show one job (by id or name); for a cross-site evaluation also its matrix, for a
    statistics job its statistics (both from the job's metrics)."""
    with session() as client:
        found = resolve_job(client, job)
        tables = result_tables(client.get_metrics(found.id).metrics, found.spec)
    render(
        found,
        output,
        (*COLUMNS, "desired_state", "reason", "deadline") if output == "table" else (),
    )
    if output == Format.table:
        for table in tables:
            typer.echo("")
            render(table.rows, output, table.columns, title=table.title)


@app.command("update")
def update(
    job: str,
    spec: Annotated[
        Path | None, typer.Option("--spec", exists=True, dir_okay=False, readable=True)
    ] = None,
    code_version: Annotated[int | None, typer.Option(min=0)] = None,
    output: OutputOpt = Format.table,
) -> None:
    """Replace a job's spec or code version (only while it is ready)."""
    body = read_json(spec) if spec else None
    with session() as client:
        found = resolve_job(client, job)
        render(client.update_job(found.id, body, code_version), output, COLUMNS)


@app.command("delete")
def delete(job: str) -> None:
    """Delete a job that is not active."""
    with session() as client:
        found = resolve_job(client, job)
        client.delete_job(found.id)
    typer.echo(f"deleted job {found.id}")


@app.command("start")
def start(job: str, output: OutputOpt = Format.table) -> None:
    """Start a job that is ready. A job that has ended is not run again: `job rerun` makes a
    new run of it."""
    with session() as client:
        found = resolve_job(client, job)
        if found.terminal:
            raise ConfigError(
                f"job {found.name} ({found.id}) already ended ({found.state}); "
                f"`flamectl job rerun {found.name}` makes a new run of it"
            )
        render(client.start_job(found.id), output, COLUMNS)


_RUN_SUFFIX = re.compile(r"^(?P<base>.+)-(?P<n>[0-9]+)$")


def next_run_name(name: str, taken: set[str]) -> str:
    """``demo`` -> ``demo-2`` (``demo-2`` -> ``demo-3``), the first one not ``taken``."""
    found = _RUN_SUFFIX.match(name)
    base, n = (found["base"], int(found["n"]) + 1) if found else (name, 2)
    while f"{base}-{n}" in taken:
        n += 1
    return f"{base}-{n}"


@app.command("rerun")
def rerun(
    job: str,
    name: Annotated[str, typer.Option(help="the new job's name (default: NAME-2, NAME-3...)")] = "",
    watch: Annotated[bool, typer.Option(help="follow the new run until it ends")] = False,
    output: OutputOpt = Format.table,
) -> None:
    """Run a finished job again, as a new job with the same design, code version, spec and
    project (the finished one and its results stay as they are)."""
    with session() as client:
        found = resolve_job(client, job)
        if not found.terminal:
            raise ConfigError(
                f"job {found.name} is {found.state}; only a job that has ended can be rerun"
            )
        new_name = name or next_run_name(found.name, {j.name for j in client.list_jobs()})
        created = client.create_job(
            new_name, found.design_id, found.spec, found.code_version, found.project_id
        )
        started = client.start_job(created.id)
        if output != Format.table:
            render(started, output, COLUMNS)
        else:
            typer.echo(
                f"{started.name} ({started.id}): a new run of {found.name}, "
                f"design {found.design_id}, code v{found.code_version}; {started.state}"
            )
        if not watch:
            return
        final = watch_job(client, started.id, console=Console(stderr=output != Format.table))
    if output == Format.table:
        typer.echo(f"job {final.id} {final.state}{': ' + final.reason if final.reason else ''}")
    if final.state != "completed":
        raise typer.Exit(ExitCode.JOB_FAILED)


@app.command("stop")
def stop(job: str, output: OutputOpt = Format.table) -> None:
    """Stop a running job."""
    with session() as client:
        render(client.stop_job(resolve_job(client, job).id), output, COLUMNS)


@app.command("tasks")
def tasks(job: str, output: OutputOpt = Format.table) -> None:
    """List a job's tasks."""
    with session() as client:
        render(client.list_tasks(resolve_job(client, job).id), output, TASK_COLUMNS)


@app.command("status")
def status(job: str, output: OutputOpt = Format.table) -> None:
    """State, reason, every transition with its time, and the tasks."""
    with session() as client:
        found = resolve_job(client, job)
        task_list = client.list_tasks(found.id)
    if output != Format.table:
        render({"job": found, "tasks": task_list}, output)
        return
    render(found, output, ("id", "name", "state", "desired_state", "reason", "deadline"))
    typer.echo("")
    rows = [
        {"at": t.at, "from": t.from_state or "-", "to": t.to_state, "reason": t.reason}
        for t in found.transitions
    ]
    render(rows, output, ("at", "from", "to", "reason"), title="transitions")
    typer.echo("")
    render(task_list, output, TASK_COLUMNS, title="tasks")


def _rounds(job: Job) -> int | None:
    for key in ("rounds", "max_rounds"):
        value: Any = job.spec.get(key)
        if isinstance(value, int) and value > 0:
            return value
    hyper = job.spec.get("hyperparameters")
    if isinstance(hyper, dict) and isinstance(hyper.get("rounds"), int):
        return int(hyper["rounds"])
    return None


def _latest(metrics: list[Metric], latest: dict[str, Metric] | None = None) -> dict[str, Metric]:
    """Each key's point at the highest step, from ``metrics`` and what ``latest`` had."""
    latest = {} if latest is None else latest
    for m in metrics:
        if m.key not in latest or m.step >= latest[m.key].step:
            latest[m.key] = m
    return latest


def watch_job(
    client: FlameClient, job_id: str, interval: float = 1.0, console: Console | None = None
) -> Job:
    """Poll the job and its metrics with a progress bar until it reaches a terminal state."""
    current = client.get_job(job_id)
    total = _rounds(current)
    with Progress(
        TextColumn("[bold]{task.fields[state]:<11}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[metrics]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        bar = progress.add_task("job", total=total, state=current.state, metrics="")
        latest: dict[str, Metric] = {}
        seen = 0  # each poll asks for the points stored since the last (a long job has many)
        while True:
            got = client.get_metrics(job_id, after_seq=seen)
            seen = max(seen, got.last_seq)
            latest = _latest(got.metrics, latest)
            step = max((m.step for m in latest.values()), default=0)
            shown = "  ".join(f"{k}={m.value:.4g}" for k, m in sorted(latest.items())[:4])
            progress.update(bar, completed=step, state=current.state, metrics=shown)
            if current.terminal:
                return current
            time.sleep(interval)
            current = client.get_job(job_id)


@app.command("watch")
def watch(
    job: str,
    interval: Annotated[float, typer.Option(min=0.1, help="seconds between polls")] = 1.0,
    output: OutputOpt = Format.table,
) -> None:
    """Follow state and per-round metrics until the job ends; exit 0 only if it completed
    (6 if it failed or was terminated)."""
    with session() as client:
        found = resolve_job(client, job)
        final = watch_job(client, found.id, interval, Console(stderr=output != Format.table))
        metrics = client.get_metrics(found.id)
    if output == Format.table:
        typer.echo(f"job {final.id} {final.state}{': ' + final.reason if final.reason else ''}")
        if metrics.run_uri:
            typer.echo(f"run:   {metrics.run_uri}")
        if metrics.model_uri:
            typer.echo(f"model: {metrics.model_uri}")
    else:
        render({"job": plain(final), "metrics": plain(metrics)}, output)
    if final.state != "completed":
        raise typer.Exit(ExitCode.JOB_FAILED)
