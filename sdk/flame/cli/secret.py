"""Read a secret for a login: from a file (``-``: stdin), a hidden prompt, or piped stdin.
Never required in argv, where every local user sees it (``ps``)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

TokenFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--token-file", help="read the token from this file ('-': standard input)", dir_okay=False
    ),
]


def read_secret(value: str | None, file: Path | None, what: str) -> str:
    if file is not None:
        text = sys.stdin.readline() if str(file) == "-" else _read(file, what)
    elif value:
        typer.echo(
            f"warning: a {what} in the command line is visible to every local user (ps); "
            "prefer --token-file or the prompt",
            err=True,
        )
        text = value
    elif sys.stdin.isatty():
        text = typer.prompt(what.capitalize(), hide_input=True)
    else:
        text = sys.stdin.readline()
    secret = text.strip()
    if not secret:
        typer.echo(f"error: no {what} given", err=True)
        raise typer.Exit(2)
    return secret


def _read(file: Path, what: str) -> str:
    try:
        return file.read_text()
    except OSError as exc:
        typer.echo(f"error: cannot read the {what} from {file}: {exc.strerror}", err=True)
        raise typer.Exit(2) from None
