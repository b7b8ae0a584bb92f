"""``flamectl logs JOB [--task T] [--follow] [-o json]``."""

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


def _echo(line: LogLine, fmt: LogFormat) -> None:
    if fmt == LogFormat.json:  # one JSON object per line (JSON Lines), also while following
        typer.echo(json.dumps(line.model_dump(mode="json")))
        return
    stamp = line.at.strftime("%H:%M:%S") if line.at else "--:--:--"
    typer.echo(f"{stamp} {line.task_id[:12]} {line.stream}: {line.line}")


def logs(
    job: str,
    task: Annotated[str, typer.Option("--task", "-t", help="only this task id")] = "",
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
    """Print the logs the job's tasks shipped to the control plane."""
    with session() as client:
        job_id = resolve_job(client, job).id
        after = 0
        ended = False
        while True:
            page = client.get_logs(job_id, task_id=task, after_seq=after)
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
