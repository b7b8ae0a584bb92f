"""Bearer secrets: user API tokens, node credentials, per-job task credentials; authentication.

Only the sha256 of a secret is stored; the secret itself is returned once.
"""

from __future__ import annotations

from datetime import timedelta

import structlog

from flame_service.auth import Caller, hash_token, new_token
from flame_service.errors import InvalidArgument, NotFound, Unauthenticated

from ..store.records import TokenRecord, new_id, utcnow
from .access import JOB_PREFIX, not_found, require_user
from .context import Ctx
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
) -> IssuedToken:
    """Create and store a new secret (hashed); the plain secret is in the result only."""
    prefix = {"api": "user", "enrolment": "enrol", "node": "node", "task": "task"}[kind]
    secret = new_token(prefix)
    record = TokenRecord.model_validate(
        {
            "id": new_id(),
            "kind": kind,
            "scope": scope,
            "subject": subject,
            "token_hash": hash_token(secret),
            "description": description,
            "expires_at": utcnow() + timedelta(seconds=ttl_seconds) if ttl_seconds else None,
        }
    )
    return IssuedToken(record=await ctx.store.create_token(record), secret=secret)


async def create_token(
    ctx: Ctx, caller: Caller, *, user_id: str, description: str, ttl_seconds: int
) -> IssuedToken:
    require_user(caller)
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
    )
    log.info("token.created", token_id=issued.record.id, user_id=user_id, by=caller.subject)
    return issued


async def revoke_token(ctx: Ctx, caller: Caller, token_id: str) -> None:
    require_user(caller)
    try:
        token = await ctx.store.get_token(token_id)
    except NotFound:
        raise not_found("token", token_id) from None
    if token.kind != "api" or not (caller.is_admin or token.subject == caller.subject):
        raise not_found("token", token_id)
    if not token.revoked:
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
            return Caller("admin" if user.admin else "user", user.id)
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
