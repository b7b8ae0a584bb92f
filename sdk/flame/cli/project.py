"""``flamectl project``: projects share resources with their members."""

from __future__ import annotations

from typing import Annotated

import typer

from flame.cli.common import group, session
from flame.cli.output import Format, OutputOpt, render

app = group("Projects and members.")
COLUMNS = ("id", "name", "owner", "members", "description")


@app.command("create")
def create(
    name: str,
    description: Annotated[str, typer.Option(help="free text")] = "",
    output: OutputOpt = Format.table,
) -> None:
    """Create a project (you are its owner)."""
    with session() as client:
        render(client.create_project(name, description), output)


@app.command("list")
def list_(output: OutputOpt = Format.table) -> None:
    """List projects you own or belong to."""
    with session() as client:
        render(client.list_projects(), output, COLUMNS)


@app.command("get")
def get(project_id: str, output: OutputOpt = Format.table) -> None:
    """Show one project."""
    with session() as client:
        render(client.get_project(project_id), output)


@app.command("update")
def update(
    project_id: str,
    description: Annotated[str, typer.Option(help="new description")],
    output: OutputOpt = Format.table,
) -> None:
    """Change a project's description."""
    with session() as client:
        render(client.update_project(project_id, description), output)


@app.command("delete")
def delete(project_id: str) -> None:
    """Delete a project."""
    with session() as client:
        client.delete_project(project_id)
    typer.echo(f"deleted project {project_id}")


@app.command("add-member")
def add_member(project_id: str, user_id: str, output: OutputOpt = Format.table) -> None:
    """Add a user to a project."""
    with session() as client:
        render(client.add_member(project_id, user_id), output)


@app.command("remove-member")
def remove_member(project_id: str, user_id: str, output: OutputOpt = Format.table) -> None:
    """Remove a user from a project."""
    with session() as client:
        render(client.remove_member(project_id, user_id), output)
