"""``flamectl audit``: who changed what, when, and how it ended (admins)."""

from __future__ import annotations

from typing import Annotated

import typer

from flame.cli.common import session
from flame.cli.output import Format, OutputOpt, render

COLUMNS = ("at", "actor_scope", "actor", "action", "target", "outcome", "detail")


def audit(
    actor: Annotated[str, typer.Option(help="only calls by this user / node id")] = "",
    action: Annotated[str, typer.Option(help="only this call, e.g. CreateJob")] = "",
    output: OutputOpt = Format.table,
) -> None:
    """Show the audit log: every state-changing call, oldest first."""
    with session() as client:
        render(list(client.audit(actor=actor, action=action)), output, COLUMNS)
