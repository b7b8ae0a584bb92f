"""The audit log: every state-changing call, who made it, on what, when, and how it ended.

The gRPC edge records one entry per call it serves (queries and telemetry excepted: see
``QUERIES`` and ``TELEMETRY`` in :mod:`flame_controller.servicer.calls`); admins read it.
"""

from __future__ import annotations

import structlog

from flame_service.auth import Caller

from ..store.records import AuditRecord, new_id
from .access import page_limit, require_admin
from .context import Ctx
from .results import Listing

log = structlog.get_logger(__name__)
MAX_DETAIL = 500


async def record(
    ctx: Ctx,
    caller: Caller | None,
    action: str,
    *,
    target: str = "",
    outcome: str = "ok",
    detail: str = "",
    service: str = "",
) -> None:
    """Append one entry; a failure to write it is logged, never the caller's problem."""
    scope: str = caller.scope if caller is not None else "service"
    actor = caller.subject if caller is not None else (service or "anonymous")
    entry = AuditRecord(
        id=new_id(),
        actor_scope=scope,
        actor=actor,
        action=action,
        target=target[:256],
        outcome=outcome,
        detail=detail[:MAX_DETAIL],
    )
    try:
        await ctx.store.append_audit(entry)
    except Exception as exc:
        log.error("audit.not_written", action=action, actor=actor, error=str(exc))


async def list_audit(
    ctx: Ctx, caller: Caller, *, actor: str, action: str, limit: int, after: str
) -> Listing[AuditRecord]:
    require_admin(caller)
    items, cursor = await ctx.store.list_audit(
        actor=actor or None, action=action or None, limit=page_limit(limit), after=after or None
    )
    return Listing(items, cursor or "")
