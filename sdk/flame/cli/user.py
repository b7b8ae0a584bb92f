"""``flamectl user``: users and their API tokens (admin)."""

from __future__ import annotations

from typing import Annotated

import typer

from flame.cli.common import group, session
from flame.cli.output import Format, OutputOpt, render

app = group("Users and API tokens.")
COLUMNS = ("id", "name", "email", "admin", "created_at")


@app.command("create")
def create(
    name: str,
    email: Annotated[str, typer.Option(help="e-mail address")] = "",
    admin: Annotated[bool, typer.Option("--admin", help="grant admin scope")] = False,
    output: OutputOpt = Format.table,
) -> None:
    """Create a user."""
    with session() as client:
        render(client.create_user(name, email, admin), output)


@app.command("list")
def list_(output: OutputOpt = Format.table) -> None:
    """List users."""
    with session() as client:
        render(client.list_users(), output, COLUMNS)


@app.command("get")
def get(user_id: str, output: OutputOpt = Format.table) -> None:
    """Show one user."""
    with session() as client:
        render(client.get_user(user_id), output)


@app.command("update")
def update(
    user_id: str,
    email: Annotated[str | None, typer.Option(help="new e-mail address")] = None,
    admin: Annotated[bool | None, typer.Option("--admin/--no-admin")] = None,
    output: OutputOpt = Format.table,
) -> None:
    """Change a user's e-mail or admin flag."""
    with session() as client:
        render(client.update_user(user_id, email=email, admin=admin), output)


@app.command("delete")
def delete(user_id: str) -> None:
    """Delete a user."""
    with session() as client:
        client.delete_user(user_id)
    typer.echo(f"deleted user {user_id}")


@app.command("token")
def token(
    user_id: str,
    description: Annotated[str, typer.Option(help="what the token is for")] = "",
    ttl: Annotated[int, typer.Option(min=0, help="lifetime in seconds; 0 = no expiry")] = 0,
    read_only: Annotated[bool, typer.Option("--read-only", help="queries only")] = False,
    output: OutputOpt = Format.table,
) -> None:
    """Create an API token for a user (shown once)."""
    scopes = ("read",) if read_only else ("read", "write")
    with session() as client:
        render(client.create_token(user_id, description, ttl, scopes), output)


@app.command("tokens")
def tokens(user_id: str, output: OutputOpt = Format.table) -> None:
    """List a user's API tokens (never their secrets)."""
    with session() as client:
        render(
            client.list_tokens(user_id),
            output,
            ("id", "description", "scopes", "created_at", "expires_at", "revoked"),
        )


@app.command("revoke-token")
def revoke_token(token_id: str) -> None:
    """Revoke an API token by its id."""
    with session() as client:
        client.revoke_token(token_id)
    typer.echo(f"revoked token {token_id}")
