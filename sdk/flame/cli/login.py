"""``flamectl login`` and ``flamectl whoami``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flame.cli.client import FlameClient
from flame.cli.common import session
from flame.cli.config import Login, save_login
from flame.cli.output import Format, OutputOpt, render
from flame.cli.secret import TokenFileOpt, read_secret


def login(
    server: Annotated[str, typer.Option("--server", "-s", help="apiserver URL")],
    token: Annotated[
        str | None, typer.Option("--token", "-t", help="API token (prefer --token-file)")
    ] = None,
    token_file: TokenFileOpt = None,
    ca_file: Annotated[
        Path | None,
        typer.Option(
            "--ca-file",
            help="PEM of the CA that signed the server's certificate (default: the system's)",
        ),
    ] = None,
) -> None:
    """Check the token against the server and save both for later commands. The token comes
    from --token-file, a hidden prompt, or standard input."""
    token = read_secret(token, token_file, "API token")
    ca = str(ca_file.expanduser().resolve()) if ca_file else None
    saved = Login(server=server.rstrip("/"), token=token, ca_file=ca)
    with FlameClient(server, token, security=saved.security()) as client:
        me = client.whoami()
    path = save_login(saved)
    typer.echo(f"logged in to {server} as {me.subject} ({me.scope}); saved to {path}")


def whoami(output: OutputOpt = Format.table) -> None:
    """Who the saved token belongs to."""
    with session() as client:
        render(client.whoami(), output)
