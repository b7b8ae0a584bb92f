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


INVITATION_COLUMNS = ("id", "note", "expires_at", "used_by", "revoked")


@app.command("invite")
def invite(
    project_id: str,
    ttl: Annotated[
        int, typer.Option(help="seconds the link works (0 = 24 hours; at most 7 days)")
    ] = 0,
    note: Annotated[str, typer.Option(help="whom it is for (shown in `invitations`)")] = "",
) -> None:
    """Make a one-time link that lets one person join the project (shown once)."""
    with session() as client:
        issued = client.create_invitation(project_id, ttl, note)
        url = client.base_url + issued.link
    typer.echo(
        f"invitation {issued.invitation.id}, works once until {issued.invitation.expires_at}"
    )
    typer.echo(url)


@app.command("invitations")
def invitations(project_id: str, output: OutputOpt = Format.table) -> None:
    """List a project's invitations (never their links)."""
    with session() as client:
        render(client.list_invitations(project_id), output, INVITATION_COLUMNS)


@app.command("revoke-invitation")
def revoke_invitation(invitation_id: str, output: OutputOpt = Format.table) -> None:
    """Make an unused invitation link stop working."""
    with session() as client:
        render(client.revoke_invitation(invitation_id), output)


@app.command("join")
def join(link: Annotated[str, typer.Argument(help="the invitation link or its secret")]) -> None:
    """Join a project with an invitation link, as the signed-in user."""
    secret = link.rsplit("/", 1)[-1]
    with session() as client:
        joined = client.accept_invitation(secret)
    typer.echo(f"joined project {joined.project.name} ({joined.project.id}) as {joined.user.name}")
