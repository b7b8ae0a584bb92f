"""``flamectl``: the command line of the Flame control plane."""

from __future__ import annotations

import importlib

import typer

from flame.cli import code, dataset, design, job, node, project, user
from flame.cli.common import FlameGroup
from flame.cli.login import login, whoami
from flame.cli.logs import logs

app = typer.Typer(
    cls=FlameGroup,
    name="flamectl",
    help="Manage Flame: users, nodes, datasets, designs, code and federated-learning jobs.",
    no_args_is_help=True,
)
app.command("login")(login)
app.command("whoami")(whoami)
app.command("logs")(logs)
for _name, _module in (
    ("user", user),
    ("project", project),
    ("node", node),
    ("dataset", dataset),
    ("design", design),
    ("code", code),
    ("job", job),
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


_delegate(
    "run", "flame.cli.run_local:run_local_command", "Run a job locally: flamectl run --local DIR"
)
_delegate("up", "flame.cli.up:up_command", "Start the embedded control plane on this machine.")
_delegate("down", "flame.cli.up:down_command", "Stop what `flamectl up` started.")

__all__ = ["app"]
