"""``flamectl node``: nodes (silos / devices) and their enrolment tokens."""

from __future__ import annotations

from typing import Annotated

import typer

from flame.cli.common import group, parse_labels, session
from flame.cli.output import Format, OutputOpt, render

app = group("Nodes: create one, then run `flamelet login --token <enrolment token>` on it.")
COLUMNS = ("id", "name", "presence", "enrolled", "revoked", "labels", "last_seen")
LabelOpt = Annotated[list[str] | None, typer.Option("--label", "-l", help="KEY=VALUE, repeatable")]


@app.command("create")
def create(
    name: str,
    project: Annotated[str, typer.Option(help="share with this project")] = "",
    label: LabelOpt = None,
    output: OutputOpt = Format.table,
) -> None:
    """Create a node; prints its one-time enrolment token."""
    with session() as client:
        created = client.create_node(name, project, parse_labels(label))
    if output == Format.table:
        render(created.node, output)
        typer.echo(f"enrolment token (shown once): {created.enrolment_token}")
    else:
        render(created, output)


@app.command("list")
def list_(
    project: Annotated[str, typer.Option(help="only this project")] = "",
    output: OutputOpt = Format.table,
) -> None:
    """List nodes."""
    with session() as client:
        render(client.list_nodes(project), output, COLUMNS)


@app.command("get")
def get(node_id: str, output: OutputOpt = Format.table) -> None:
    """Show one node."""
    with session() as client:
        render(client.get_node(node_id), output)


@app.command("update")
def update(
    node_id: str,
    label: LabelOpt = None,
    replace: Annotated[bool, typer.Option("--replace", help="replace all labels")] = False,
    output: OutputOpt = Format.table,
) -> None:
    """Set (or replace) a node's labels."""
    with session() as client:
        render(client.update_node(node_id, parse_labels(label), replace), output)


@app.command("delete")
def delete(node_id: str) -> None:
    """Delete a node."""
    with session() as client:
        client.delete_node(node_id)
    typer.echo(f"deleted node {node_id}")


@app.command("revoke")
def revoke(node_id: str, output: OutputOpt = Format.table) -> None:
    """Revoke a node's credential (it must enrol again)."""
    with session() as client:
        render(client.revoke_node(node_id), output)
