"""``flamectl login`` and ``flamectl whoami``."""

from __future__ import annotations

from typing import Annotated

import typer

from flame.cli.client import FlameClient
from flame.cli.common import session
from flame.cli.config import Login, save_login
from flame.cli.output import Format, OutputOpt, render


def login(
    server: Annotated[str, typer.Option("--server", "-s", help="apiserver URL")],
    token: Annotated[str, typer.Option("--token", "-t", help="API token")],
) -> None:
    """Check the token against the server and save both for later commands."""
    with FlameClient(server, token) as client:
        me = client.whoami()
    path = save_login(Login(server=server.rstrip("/"), token=token))
    typer.echo(f"logged in to {server} as {me.subject} ({me.scope}); saved to {path}")


def whoami(output: OutputOpt = Format.table) -> None:
    """Who the saved token belongs to."""
    with session() as client:
        render(client.whoami(), output)
