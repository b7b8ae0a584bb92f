"""``flamectl logs JOB [--task T] [--source S] [--node N] [--level L] [--follow] [-o json]``."""

from __future__ import annotations

import json
import time
from enum import StrEnum
from typing import Annotated

import typer

from flame.cli.common import resolve_job, session
from flame.cli.resources import LogLine


class LogFormat(StrEnum):
    table = "table"
    json = "json"


class LogSource(StrEnum):
    task = "task"
    controller = "controller"
    notifier = "notifier"
    apiserver = "apiserver"


class LogLevel(StrEnum):
    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"
    critical = "critical"


def _echo(line: LogLine, fmt: LogFormat) -> None:
    if fmt == LogFormat.json:  # one JSON object per line (JSON Lines), also while following
        typer.echo(json.dumps(line.model_dump(mode="json")))
        return
    stamp = line.at.strftime("%H:%M:%S") if line.at else "--:--:--"
    if line.source != "task":  # a service's event: its source and level instead of a stream
        about = line.task_id[:12] or "-"
        typer.echo(f"{stamp} {about} [{line.source}] {line.level}: {line.line}")
        return
    typer.echo(f"{stamp} {line.task_id[:12]} {line.stream}: {line.line}")


def logs(
    job: str,
    task: Annotated[str, typer.Option("--task", "-t", help="only this task id")] = "",
    source: Annotated[
        LogSource | None,
        typer.Option("--source", "-s", help="only lines from this source", case_sensitive=False),
    ] = None,
    node: Annotated[str, typer.Option("--node", "-n", help="only lines about this node id")] = "",
    level: Annotated[
        LogLevel | None,
        typer.Option(
            "--level",
            "-l",
            help="only service events at this level or above (leaves task output out)",
            case_sensitive=False,
        ),
    ] = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="keep printing until the job ends")
    ] = False,
    interval: Annotated[float, typer.Option(min=0.1, help="seconds between polls")] = 1.0,
    output: Annotated[
        LogFormat,
        typer.Option(
            "--output", "-o", help="table, or json: one object per line", case_sensitive=False
        ),
    ] = LogFormat.table,
) -> None:
    """Print a job's logs: its tasks' output and the services' events about it."""
    with session() as client:
        job_id = resolve_job(client, job).id
        after = 0
        ended = False
        told_dropped = 0
        while True:
            page = client.get_logs(
                job_id,
                task_id=task,
                after_seq=after,
                source=source.value if source else "",
                node_id=node,
                level=level.value if level else "",
            )
            if page.dropped > told_dropped:  # on stderr: stdout stays the lines alone
                gone = page.dropped - told_dropped
                typer.echo(f"({gone} older lines of this job were dropped by retention)", err=True)
                told_dropped = page.dropped
            for line in page.lines:
                _echo(line, output)
            after = max(after, page.last_seq)
            if page.lines:
                continue  # drain what is there before deciding to stop or wait
            if not follow or ended:
                return
            # Once the job has ended, read once more: lines shipped just before the end.
            ended = client.get_job(job_id).terminal
            if not ended:
                time.sleep(interval)
