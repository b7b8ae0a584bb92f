"""`flamectl up` / `flamectl down`: the embedded control plane on one machine."""

from __future__ import annotations

from pathlib import Path

import typer

from flame.cli.config import Login, save_login
from flame.cli.stack import Stack, StackError


def up_command(
    nodes: int = typer.Option(3, "--nodes", "-n", min=0, help="local flamelets to enrol and run"),
    home: Path | None = typer.Option(
        None, "--home", help="state dir (default $FLAME_HOME/stack, i.e. ~/.flame/stack)"
    ),
    timeout: float = typer.Option(120.0, help="seconds to wait for everything to be healthy"),
    login: bool = typer.Option(
        True, "--login/--no-login", help="log flamectl in to this stack as its admin"
    ),
    plaintext: bool = typer.Option(
        False,
        "--plaintext",
        help="development only: no TLS between anything (default: TLS on every hop, with a "
        "CA made in the stack's home)",
    ),
) -> None:
    """Start apiserver, controller (SQLite), notifier, an MLflow server and N flamelets.

    Each step is printed as it is reached; at the end, the addresses, the admin token and where
    each node keeps its state (`flamelet dataset add ... --home NODE_HOME` registers data on it).
    """

    def step(message: str) -> None:
        typer.echo(f"  {message}", err=True)

    try:
        state = Stack(home, tls=not plaintext).up(nodes=nodes, timeout=timeout, progress=step)
    except StackError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"apiserver   {state.api_url}")
    if state.mlflow_url:
        typer.echo(f"mlflow      {state.mlflow_url}  (login: flamectl tracking credentials)")
    else:
        typer.echo("mlflow      -")
    typer.echo(f"CA          {state.ca_file or '- (plaintext)'}")
    for name, node_home in state.nodes.items():
        typer.echo(f"{name:<11} {node_home}")
    if not state.nodes:
        typer.echo("nodes       -")
    for name, url in state.metrics.items():
        typer.echo(f"{'metrics':<11} {url}  ({name})")
    if state.metrics_token_file:
        typer.echo(f"{'':<11} scrape with: Authorization: Bearer <{state.metrics_token_file}>")
    typer.echo(f"admin token {state.admin_token}")
    if login:
        saved = Login(server=state.api_url, token=state.admin_token, ca_file=state.ca_file or None)
        path = save_login(saved)
        typer.echo(f"flamectl is logged in to {state.api_url} as admin ({path})")
    else:
        ca = f" --ca-file {state.ca_file}" if state.ca_file else ""
        typer.echo(
            f"log in with: flamectl login --server {state.api_url} "
            f"--token-file {state.home}/secrets/admin.token{ca}"
        )


def down_command(
    home: Path | None = typer.Option(
        None, "--home", help="state dir (default $FLAME_HOME/stack, i.e. ~/.flame/stack)"
    ),
) -> None:
    """Stop everything `flamectl up` started (and the tasks it ran)."""
    stopped = Stack(home).down()
    typer.echo(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")
