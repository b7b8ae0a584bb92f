"""``flamectl logs JOB [--task T] [--follow]``."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from flame.cli.common import resolve_job, session


def logs(
    job: str,
    task: Annotated[str, typer.Option("--task", "-t", help="only this task id")] = "",
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="keep printing until the job ends")
    ] = False,
    interval: Annotated[float, typer.Option(min=0.1, help="seconds between polls")] = 1.0,
) -> None:
    """Print the logs the job's tasks shipped to the control plane."""
    with session() as client:
        job_id = resolve_job(client, job).id
        after = 0
        while True:
            page = client.get_logs(job_id, task_id=task, after_seq=after)
            for line in page.lines:
                stamp = line.at.strftime("%H:%M:%S") if line.at else "--:--:--"
                typer.echo(f"{stamp} {line.task_id[:12]} {line.stream}: {line.line}")
            after = max(after, page.last_seq)
            if page.lines:
                continue  # drain before deciding to stop or wait
            if not follow or client.get_job(job_id).terminal:
                # one last read: lines shipped just before the terminal state
                if follow:
                    for line in client.get_logs(job_id, task_id=task, after_seq=after).lines:
                        typer.echo(f"{line.task_id[:12]} {line.stream}: {line.line}")
                return
            time.sleep(interval)
