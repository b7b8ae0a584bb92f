"""Project invitations: an owner makes a one-time link; whoever opens it joins the project.

Only the sha256 of the link's secret is stored; the secret is returned once. A link works once
(redeeming is a compare-and-set on the invitation's version), until it expires (24 h by default,
at most 7 days) and until the owner revokes it. Whoever holds an unused link may join as an
ordinary member: an invitation can never make an admin, an owner, or reach another project.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import structlog

from flame_service.auth import Caller, hash_token
from flame_service.errors import (
    AlreadyExists,
    Conflict,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)

from ..store.records import InvitationRecord, ProjectRecord, UserRecord, new_id, utcnow
from .access import check_name, fetch, page_limit, require_user
from .context import Ctx
from .entropy import new_secret
from .projects import get_project
from .results import IssuedToken, Listing
from .tokens import issue
from .users import check_email

log = structlog.get_logger(__name__)

DEFAULT_TTL_SECONDS = 24 * 3600
MIN_TTL_SECONDS = 60
MAX_TTL_SECONDS = 7 * 24 * 3600
INVALID_LINK = "this invitation link is not valid: unknown, already used, revoked or expired"


@dataclass(frozen=True)
class IssuedInvitation:
    """A new invitation: ``secret`` goes into the link and is shown once."""

    record: InvitationRecord
    secret: str


@dataclass(frozen=True)
class Joined:
    """The outcome of opening a link: the project joined, as which user, and for a person who
    had no account the API token of their new one (shown once)."""

    project: ProjectRecord
    user: UserRecord
    token: IssuedToken | None = None


async def _owned(ctx: Ctx, caller: Caller, project_id: str) -> ProjectRecord:
    project = await get_project(ctx, caller, project_id)
    if not (caller.is_admin or project.owner == caller.subject):
        raise PermissionDenied(f"only the owner of project {project_id!r} may invite")
    return project


def usable(invitation: InvitationRecord) -> bool:
    return not invitation.used_by and not invitation.revoked and invitation.expires_at > utcnow()


async def create_invitation(
    ctx: Ctx, caller: Caller, project_id: str, *, ttl_seconds: int, note: str
) -> IssuedInvitation:
    require_user(caller)
    await _owned(ctx, caller, project_id)
    ttl = ttl_seconds or DEFAULT_TTL_SECONDS
    if not MIN_TTL_SECONDS <= ttl <= MAX_TTL_SECONDS:
        raise InvalidArgument(
            f"an invitation lasts between {MIN_TTL_SECONDS} s and {MAX_TTL_SECONDS} s "
            f"(0 = {DEFAULT_TTL_SECONDS} s)"
        )
    if len(note) > 200:
        raise InvalidArgument("invitation note is longer than 200 characters")
    secret = new_secret("invite")
    record = InvitationRecord(
        id=new_id(),
        project_id=project_id,
        owner=caller.subject,
        token_hash=hash_token(secret),
        note=note,
        expires_at=utcnow() + timedelta(seconds=ttl),
    )
    created = await ctx.store.create_invitation(record)
    log.info("invitation.created", invitation_id=created.id, project_id=project_id, ttl=ttl)
    return IssuedInvitation(created, secret)


async def list_invitations(
    ctx: Ctx, caller: Caller, project_id: str, *, limit: int, after: str
) -> Listing[InvitationRecord]:
    require_user(caller)
    await _owned(ctx, caller, project_id)
    items, cursor = await ctx.store.list_invitations(
        project_id=project_id, limit=page_limit(limit), after=after or None
    )
    return Listing(items, cursor or "")


async def revoke_invitation(ctx: Ctx, caller: Caller, invitation_id: str) -> InvitationRecord:
    require_user(caller)
    invitation = await fetch(ctx.store.get_invitation(invitation_id), "invitation", invitation_id)
    try:
        await _owned(ctx, caller, invitation.project_id)
    except NotFound:
        raise NotFound(f"invitation {invitation_id!r} not found") from None
    if invitation.revoked:
        return invitation
    if invitation.used_by:
        raise FailedPrecondition(
            f"invitation {invitation_id!r} was already used; remove the member instead"
        )
    revoked = await ctx.store.cas_invitation(invitation.id, invitation.version, {"revoked": True})
    log.info("invitation.revoked", invitation_id=invitation_id, by=caller.subject)
    return revoked


async def _open(ctx: Ctx, secret: str) -> tuple[InvitationRecord, ProjectRecord]:
    if not secret:
        raise InvalidArgument("missing invitation secret")
    try:
        invitation = await ctx.store.get_invitation_by_hash(hash_token(secret))
        project = await ctx.store.get_project(invitation.project_id)
    except NotFound:
        raise NotFound(INVALID_LINK) from None
    if not usable(invitation):
        raise NotFound(INVALID_LINK)
    return invitation, project


async def _claim(ctx: Ctx, invitation: InvitationRecord, user_id: str) -> InvitationRecord:
    try:
        return await ctx.store.cas_invitation(
            invitation.id, invitation.version, {"used_by": user_id, "used_at": utcnow()}
        )
    except (Conflict, NotFound):
        raise NotFound(INVALID_LINK) from None


async def accept_invitation(
    ctx: Ctx, caller: Caller | None, secret: str, *, name: str, email: str
) -> Joined:
    """A signed-in user joins as themself; anyone else gets a new (non-admin) account named
    ``name`` and its first API token."""
    if caller is not None:
        require_user(caller)
        if caller.read_only:
            raise PermissionDenied("a read-only token cannot join a project")
    invitation, project = await _open(ctx, secret)
    if caller is not None:
        if caller.subject == project.owner or caller.subject in project.members:
            raise FailedPrecondition(f"you already belong to project {project.id!r}")
        user = await fetch(ctx.store.get_user(caller.subject), "user", caller.subject)
        await _claim(ctx, invitation, user.id)
        joined = await ctx.store.add_project_member(project.id, user.id)
        log.info("invitation.accepted", invitation_id=invitation.id, user_id=user.id)
        return Joined(joined, user)

    new_user = UserRecord(
        id=new_id(), name=check_name(name, "user"), email=check_email(email), admin=False
    )
    try:
        await ctx.store.get_user_by_name(new_user.name)
    except NotFound:
        pass
    else:
        raise AlreadyExists(f"user name {new_user.name!r} is taken; choose another")
    claimed = await _claim(ctx, invitation, new_user.id)
    try:
        await ctx.store.create_user(new_user)
    except AlreadyExists:
        # Someone took the name meanwhile: give the link back rather than burn it.
        await ctx.store.cas_invitation(
            claimed.id, claimed.version, {"used_by": "", "used_at": None}
        )
        raise AlreadyExists(f"user name {new_user.name!r} is taken; choose another") from None
    token = await issue(
        ctx,
        kind="api",
        scope="user",
        subject=new_user.id,
        description=f"joined project {project.name} by invitation",
    )
    joined = await ctx.store.add_project_member(project.id, new_user.id)
    log.info("invitation.accepted", invitation_id=invitation.id, user_id=new_user.id, new_user=True)
    return Joined(joined, new_user, token)
