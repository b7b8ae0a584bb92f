"""`flamectl up` / `flamectl down`: the embedded control plane on one machine."""

from __future__ import annotations

from pathlib import Path

import typer

from flame.cli.stack import Stack, StackError


def up_command(
    nodes: int = typer.Option(3, "--nodes", "-n", min=0, help="local flamelets to enrol and run"),
    home: Path | None = typer.Option(None, "--home", help="state dir (default ~/.flame/stack)"),
    timeout: float = typer.Option(120.0, help="seconds to wait for everything to be healthy"),
) -> None:
    """Start apiserver, controller (SQLite), notifier, an MLflow server and N flamelets."""
    try:
        state = Stack(home).up(nodes=nodes, timeout=timeout)
    except StackError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"apiserver   {state.api_url}")
    typer.echo(f"mlflow      {state.mlflow_url}")
    typer.echo(f"nodes       {', '.join(state.nodes) or '-'}")
    typer.echo(f"admin token {state.admin_token}")
    typer.echo(f"log in with: flamectl login --server {state.api_url} --token {state.admin_token}")


def down_command(
    home: Path | None = typer.Option(None, "--home", help="state dir (default ~/.flame/stack)"),
) -> None:
    """Stop everything `flamectl up` started (and the tasks it ran)."""
    stopped = Stack(home).down()
    typer.echo(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")
