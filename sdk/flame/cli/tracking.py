"""``flamectl tracking``: your login on the platform's MLflow server."""

from __future__ import annotations

from typing import Annotated

import typer

from flame.cli.common import group, session
from flame.cli.output import Format, OutputOpt, render

app = group("The platform's tracking server (MLflow).")


@app.command("credentials")
def credentials(
    env: Annotated[
        bool,
        typer.Option("--env", help="print shell exports for MLflow's client instead"),
    ] = False,
    output: OutputOpt = Format.table,
) -> None:
    """Your MLflow login: it reads the runs and registered models of your jobs, nothing else.
    `eval "$(flamectl tracking credentials --env)"` sets it for MLflow's client and CLI."""
    with session() as client:
        login = client.tracking_credentials()
    if env:
        typer.echo(f"export MLFLOW_TRACKING_URI={login.uri}")
        typer.echo(f"export MLFLOW_TRACKING_USERNAME={login.username}")
        typer.echo(f"export MLFLOW_TRACKING_PASSWORD={login.password}")
        return
    render(login, output)
