"""``flamectl design``: job templates (roles and channels)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flame.cli.common import group, read_json, resolve_design, session
from flame.cli.output import Format, OutputOpt, render

app = group("Designs: job templates (roles and channels).")
COLUMNS = ("id", "name", "owner", "version", "description", "created_at")
SchemaOpt = Annotated[Path, typer.Option("--schema", exists=True, dir_okay=False, readable=True)]


@app.command("create")
def create(
    name: str,
    schema: SchemaOpt,
    description: Annotated[str, typer.Option(help="free text")] = "",
    project: Annotated[str, typer.Option(help="share with this project")] = "",
    output: OutputOpt = Format.table,
) -> None:
    """Create a design from a JSON schema file ({"roles": […], "channels": […]})."""
    with session() as client:
        render(client.create_design(name, read_json(schema), description, project), output)


@app.command("list")
def list_(
    project: Annotated[str, typer.Option(help="only this project")] = "",
    output: OutputOpt = Format.table,
) -> None:
    """List designs."""
    with session() as client:
        render(client.list_designs(project), output, COLUMNS)


@app.command("get")
def get(design: str, output: OutputOpt = Format.table) -> None:
    """Show one design (by id or name)."""
    with session() as client:
        found = resolve_design(client, design)
    if output == Format.table:
        render(found, output, (*COLUMNS, "project_id"))
        typer.echo(
            f"roles: {', '.join(r.get('name', '?') for r in found.schema_.get('roles', []))}"
        )
    else:
        render(found, output)


@app.command("update")
def update(
    design: str,
    schema: Annotated[
        Path | None, typer.Option("--schema", exists=True, dir_okay=False, readable=True)
    ] = None,
    description: Annotated[str | None, typer.Option(help="new description")] = None,
    output: OutputOpt = Format.table,
) -> None:
    """Replace a design's schema and/or description."""
    with session() as client:
        found = resolve_design(client, design)
        body = read_json(schema) if schema else None
        render(client.update_design(found.id, body, description), output, COLUMNS)


@app.command("delete")
def delete(design: str) -> None:
    """Delete a design."""
    with session() as client:
        found = resolve_design(client, design)
        client.delete_design(found.id)
    typer.echo(f"deleted design {found.id}")
