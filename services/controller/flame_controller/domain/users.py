"""Users: an admin creates, lists and deletes them; a user sees and updates themself."""

from __future__ import annotations

import re

import structlog

from flame_service.auth import Caller
from flame_service.errors import FailedPrecondition, InvalidArgument, PermissionDenied
from flame_spec.types import EMAIL_PATTERN

from ..jobs.states import ACTIVE_JOB_STATES
from ..store.records import JobRecord, UserRecord, new_id
from .access import check_name, fetch, not_found, page_limit, require_admin, require_user
from .context import Ctx
from .results import Listing
from .tokens import revoke_all, usable_admins

log = structlog.get_logger(__name__)
EMAIL_RE = re.compile(EMAIL_PATTERN)


def check_email(email: str) -> str:
    if email and (len(email) > 254 or not EMAIL_RE.fullmatch(email)):
        raise InvalidArgument(f"email {email!r} is not a valid address")
    return email


async def create_user(
    ctx: Ctx, caller: Caller, *, name: str, email: str, admin: bool
) -> UserRecord:
    require_admin(caller)
    user = UserRecord(
        id=new_id(), name=check_name(name, "user"), email=check_email(email), admin=admin
    )
    created = await ctx.store.create_user(user)
    log.info("user.created", user_id=created.id, name=name, admin=admin, by=caller.subject)
    return created


async def get_user(ctx: Ctx, caller: Caller, user_id: str) -> UserRecord:
    require_user(caller)
    if not (caller.is_admin or caller.subject == user_id):
        raise not_found("user", user_id)
    return await fetch(ctx.store.get_user(user_id), "user", user_id)


async def list_users(ctx: Ctx, caller: Caller, *, limit: int, after: str) -> Listing[UserRecord]:
    require_user(caller)
    if not caller.is_admin:
        return Listing([await fetch(ctx.store.get_user(caller.subject), "user", caller.subject)])
    items, cursor = await ctx.store.list_users(limit=page_limit(limit), after=after or None)
    return Listing(items, cursor or "")


async def _jobs_in_progress(ctx: Ctx, user_id: str) -> list[JobRecord]:
    """The user's jobs that run or were asked to (a stopped or finished job may be orphaned)."""
    found: list[JobRecord] = []
    states = sorted(ACTIVE_JOB_STATES | {"ready"})
    after = None
    while True:
        items, after = await ctx.store.list_jobs(
            owners=[user_id], states=states, limit=1000, after=after
        )
        found += [j for j in items if j.state != "ready" or j.desired_state == "running"]
        if after is None:
            return found


async def update_user(
    ctx: Ctx, caller: Caller, user_id: str, *, email: str | None, admin: bool | None
) -> UserRecord:
    user = await get_user(ctx, caller, user_id)
    changes: dict[str, object] = {}
    if email is not None:
        changes["email"] = check_email(email)
    if admin is not None and admin != user.admin:
        if not caller.is_admin:
            raise PermissionDenied("only an admin may change the admin flag")
        if not admin and await usable_admins(ctx, without_user=user_id) == 0:
            raise FailedPrecondition(
                "cannot remove the admin flag from the last admin who can log in; "
                "make another user admin (with a token) first"
            )
        changes["admin"] = admin
    if not changes:
        return user
    updated = await ctx.store.update_user(user_id, changes)
    log.info("user.updated", user_id=user_id, fields=sorted(changes), by=caller.subject)
    return updated


async def delete_user(ctx: Ctx, caller: Caller, user_id: str) -> None:
    user = await get_user(ctx, caller, user_id)
    require_admin(caller)
    if user.admin and await usable_admins(ctx, without_user=user_id) == 0:
        raise FailedPrecondition(
            "cannot delete the last admin who can log in; make another user admin first"
        )
    busy = await _jobs_in_progress(ctx, user_id)
    if busy:
        ids = ", ".join(repr(j.id) for j in busy[:5]) + (" ..." if len(busy) > 5 else "")
        raise FailedPrecondition(
            f"user {user_id!r} still has {len(busy)} job(s) in progress ({ids}); "
            "stop them before deleting the user"
        )
    await revoke_all(ctx, subject=user_id, kind="api")
    await ctx.store.delete_user(user_id)
    log.info("user.deleted", user_id=user_id, by=caller.subject)
