"""Bearer secrets: user API tokens, node credentials, per-job task credentials; authentication.

Only the sha256 of a secret is stored; the secret itself is returned once.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import structlog

from flame_service.auth import Caller, hash_token
from flame_service.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
)
from flame_spec import TaskConfig

from ..store.records import ALL_PERMISSIONS, TokenRecord, new_id, utcnow
from .access import JOB_PREFIX, not_found, require_user
from .context import Ctx
from .entropy import new_secret
from .keys import keyed
from .results import IssuedToken

log = structlog.get_logger(__name__)
MAX_TTL_SECONDS = 10 * 365 * 24 * 3600


async def issue(
    ctx: Ctx,
    *,
    kind: str,
    scope: str,
    subject: str,
    description: str = "",
    ttl_seconds: int = 0,
    scopes: Sequence[str] = ALL_PERMISSIONS,
) -> IssuedToken:
    """Create and store a new secret (hashed); the plain secret is in the result only."""
    prefix = {"api": "user", "enrolment": "enrol", "node": "node", "task": "task"}[kind]
    secret = new_secret(prefix)
    record = TokenRecord.model_validate(
        {
            "id": new_id(),
            "kind": kind,
            "scope": scope,
            "subject": subject,
            "token_hash": hash_token(secret),
            "description": description,
            "expires_at": utcnow() + timedelta(seconds=ttl_seconds) if ttl_seconds else None,
            "scopes": list(scopes),
        }
    )
    return IssuedToken(record=await ctx.store.create_token(record), secret=secret)


def _check_scopes(scopes: Sequence[str]) -> list[str]:
    wanted = sorted(set(scopes)) or list(ALL_PERMISSIONS)
    unknown = [s for s in wanted if s not in ALL_PERMISSIONS]
    if unknown:
        raise InvalidArgument(
            f"unknown token scope(s) {', '.join(map(repr, unknown))}; "
            f"choose from {', '.join(ALL_PERMISSIONS)}"
        )
    return wanted


async def create_token(
    ctx: Ctx,
    caller: Caller,
    *,
    user_id: str,
    description: str,
    ttl_seconds: int,
    scopes: Sequence[str] = (),
) -> IssuedToken:
    require_user(caller)
    wanted = _check_scopes(scopes)
    if caller.read_only:
        raise PermissionDenied("a read-only token cannot create tokens")
    if not (caller.is_admin or caller.subject == user_id):
        raise not_found("user", user_id)
    try:
        await ctx.store.get_user(user_id)
    except NotFound:
        raise not_found("user", user_id) from None
    if ttl_seconds < 0 or ttl_seconds > MAX_TTL_SECONDS:
        raise InvalidArgument(f"ttl_seconds must be between 0 (no expiry) and {MAX_TTL_SECONDS}")
    if len(description) > 500:
        raise InvalidArgument("token description is longer than 500 characters")
    issued = await issue(
        ctx,
        kind="api",
        scope="user",
        subject=user_id,
        description=description,
        ttl_seconds=ttl_seconds,
        scopes=wanted,
    )
    log.info("token.created", token_id=issued.record.id, user_id=user_id, by=caller.subject)
    return issued


async def list_tokens(ctx: Ctx, caller: Caller, user_id: str) -> list[TokenRecord]:
    """A user's API tokens (never their secrets): the user themself or an admin."""
    require_user(caller)
    if not (caller.is_admin or caller.subject == user_id):
        raise not_found("user", user_id)
    try:
        await ctx.store.get_user(user_id)
    except NotFound:
        raise not_found("user", user_id) from None
    return await _api_tokens(ctx, user_id)


async def _api_tokens(ctx: Ctx, user_id: str) -> list[TokenRecord]:
    found: list[TokenRecord] = []
    after = None
    while True:
        items, after = await ctx.store.list_tokens(
            subject=user_id, kind="api", limit=500, after=after
        )
        found += items
        if after is None:
            return found


def live(token: TokenRecord) -> bool:
    """Usable now: not revoked, not expired, allowed to write."""
    expired = token.expires_at is not None and token.expires_at <= utcnow()
    return not token.revoked and not expired and "write" in token.scopes


async def usable_admins(
    ctx: Ctx, *, without_user: str | None = None, without_token: str | None = None
) -> int:
    """Admins who can still log in and act (an admin with a live write token), leaving out one
    user (about to be demoted or deleted) or one token (about to be revoked)."""
    count, after = 0, None
    while True:
        users, after = await ctx.store.list_users(limit=500, after=after)
        for user in users:
            if not user.admin or user.id == without_user:
                continue
            tokens = await _api_tokens(ctx, user.id)
            if any(live(t) and t.id != without_token for t in tokens):
                count += 1
        if after is None:
            return count


async def revoke_token(ctx: Ctx, caller: Caller, token_id: str) -> None:
    require_user(caller)
    try:
        token = await ctx.store.get_token(token_id)
    except NotFound:
        raise not_found("token", token_id) from None
    if token.kind != "api" or not (caller.is_admin or token.subject == caller.subject):
        raise not_found("token", token_id)
    if caller.read_only:
        raise PermissionDenied("a read-only token cannot revoke tokens")
    if not token.revoked:
        if live(token) and await usable_admins(ctx, without_token=token_id) == 0:
            raise FailedPrecondition(
                "this is the last token of the last admin: create another admin token first"
            )
        await ctx.store.update_token(token_id, {"revoked": True})
    log.info("token.revoked", token_id=token_id, by=caller.subject)


async def revoke_all(ctx: Ctx, *, subject: str, kind: str) -> int:
    """Revoke every live token of ``kind`` for ``subject``; returns how many."""
    count, after = 0, None
    while True:
        tokens, after = await ctx.store.list_tokens(subject=subject, kind=kind, after=after)
        for token in tokens:
            if not token.revoked:
                await ctx.store.update_token(token.id, {"revoked": True})
                count += 1
        if after is None:
            return count


async def issue_task_credential(ctx: Ctx, job_id: str) -> str:
    """A per-job credential for the tasks a deployer runs (scope node, subject ``job:<id>``):
    it reaches only that job's deployer-run tasks.  Revoked when the job is deleted."""
    await ctx.store.get_job(job_id)
    issued = await issue(ctx, kind="task", scope="node", subject=job_id, description="task")
    log.info("token.task_credential_issued", job_id=job_id, token_id=issued.record.id)
    return issued.secret


async def authenticate(ctx: Ctx, token: str) -> Caller:
    """Resolve a bearer secret to the caller it stands for, or raise Unauthenticated."""
    if not token:
        raise Unauthenticated("missing token")
    try:
        record = await ctx.store.get_token_by_hash(hash_token(token))
    except NotFound:
        raise Unauthenticated("invalid token") from None
    if record.revoked:
        raise Unauthenticated("token revoked")
    if record.expires_at is not None and record.expires_at <= utcnow():
        raise Unauthenticated("token expired")
    try:
        if record.kind == "api":
            user = await ctx.store.get_user(record.subject)
            read_only = "write" not in record.scopes
            return Caller("admin" if user.admin else "user", user.id, read_only=read_only)
        if record.kind == "node":
            node = await ctx.store.get_node(record.subject)
            if node.revoked:
                raise Unauthenticated("node credential revoked")
            return Caller("node", node.id)
        if record.kind == "task":
            job = await ctx.store.get_job(record.subject)
            return Caller("node", JOB_PREFIX + job.id)
    except NotFound:
        raise Unauthenticated("the token's subject no longer exists") from None
    raise Unauthenticated("an enrolment token can only be used to enrol a node")


class TaskCredentials:
    """The credentials of deployer-run tasks, as the reconciler asks for them."""

    def __init__(self, ctx: Ctx) -> None:
        self.ctx = ctx

    async def issue(self, job_id: str) -> str:
        return await issue_task_credential(self.ctx, job_id)

    async def revoke(self, job_id: str) -> int:
        return await revoke_all(self.ctx, subject=job_id, kind="task")

    def keyed(self, config: TaskConfig) -> TaskConfig:
        return keyed(self.ctx, config)
