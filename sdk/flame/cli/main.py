"""``flamectl``: the command line of the Flame control plane."""

from __future__ import annotations

import importlib
import platform
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from flame.cli import code, dataset, design, job, model, node, project, tracking, user
from flame.cli.audit import audit
from flame.cli.common import EXIT_CODES_HELP, FlameGroup, version
from flame.cli.login import login, whoami
from flame.cli.logs import logs
from flame.logs import configure as configure_logging

app = typer.Typer(
    cls=FlameGroup,
    name="flamectl",
    help="Manage Flame: users, nodes, datasets, designs, code and federated-learning jobs.",
    no_args_is_help=True,
    epilog=EXIT_CODES_HELP,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"flamectl {version()} (python {platform.python_version()})")
        raise typer.Exit()


@app.callback()
def main(
    verbose: Annotated[
        int, typer.Option("--verbose", "-v", count=True, help="more log output (-vv: debug)")
    ] = 0,
    _show_version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="print the version and exit"
        ),
    ] = False,
) -> None:
    """Manage Flame: users, nodes, datasets, designs, code and federated-learning jobs."""
    configure_logging(verbose)


app.command("login")(login)
app.command("whoami")(whoami)
app.command("logs")(logs)
app.command("audit")(audit)
for _name, _module in (
    ("user", user),
    ("project", project),
    ("node", node),
    ("dataset", dataset),
    ("design", design),
    ("code", code),
    ("job", job),
    ("tracking", tracking),
    ("model", model),
):
    app.add_typer(_module.app, name=_name)

_PASSTHROUGH = {"allow_extra_args": True, "ignore_unknown_options": True}


def _delegate(name: str, target: str, help_text: str) -> None:
    """A command whose implementation (and its options) lives in a module imported on use."""
    module_name, attr = target.split(":")

    @app.command(name, help=help_text, context_settings=_PASSTHROUGH, add_help_option=False)
    def _command(ctx: typer.Context) -> None:
        func = getattr(importlib.import_module(module_name), attr)
        inner = typer.Typer(add_completion=False)
        inner.command(name)(func)
        command = typer.main.get_command(inner)
        code = command.main(args=ctx.args, prog_name=f"flamectl {name}", standalone_mode=False)
        if isinstance(code, int) and code:
            raise typer.Exit(code)


class Backend(StrEnum):
    inproc = "inproc"
    grpc = "grpc"
    mqtt = "mqtt"
    ray = "ray"


class RunOutput(StrEnum):
    auto = "auto"
    table = "table"
    json = "json"


@app.command("run")
def run(
    local: Annotated[
        Path,
        typer.Option(
            "--local", exists=True, file_okay=False, help="job folder: design, spec and code"
        ),
    ],
    backend: Annotated[
        Backend, typer.Option(help="channel backend of the simulation (ray: over a Ray cluster)")
    ] = (Backend.inproc),
    processes: Annotated[bool, typer.Option(help="one process per role instance")] = False,
    rounds: Annotated[int | None, typer.Option(min=1, help="override the spec's rounds")] = None,
    track: Annotated[bool, typer.Option(help="log to MLflow")] = True,
    workdir: Annotated[
        Path | None,
        typer.Option(help="where tasks write their files (default: a new $FLAME_HOME/runs/…)"),
    ] = None,
    output: Annotated[
        RunOutput, typer.Option("--output", "-o", help="auto: human in a terminal, else json")
    ] = RunOutput.auto,
    verbose: Annotated[
        int, typer.Option("--verbose", "-v", count=True, help="more log output (-vv: debug)")
    ] = 0,
) -> None:
    """Run a job locally in simulation, unchanged from how the control plane runs it.

    Rounds are printed as they end. The run's files (task folders, results, its MLflow store)
    go to one new folder under $FLAME_HOME/runs (default ~/.flame/runs), named at the end."""
    from flame.cli.run_local import run_local_command  # imports the simulator only when used

    if verbose:
        configure_logging(verbose)
    run_local_command(
        local,
        backend.value,
        processes,
        workdir=workdir,
        track=track,
        rounds=rounds,
        human=None if output == RunOutput.auto else output == RunOutput.table,
    )


_delegate("up", "flame.cli.up:up_command", "Start the embedded control plane on this machine.")
_delegate("down", "flame.cli.up:down_command", "Stop what `flamectl up` started.")

__all__ = ["app"]
