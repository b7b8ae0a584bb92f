"""Nodes: created by their owner with a one-time enrolment token, enrolled by the flamelet for a
node credential, revoked, labelled; presence comes from the notifier."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import structlog

from flame_service.auth import Caller, hash_token
from flame_service.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
)

from ..store.records import NodeHealthRecord, NodeRecord, new_id, utcnow
from .access import (
    check_name,
    check_project_for_create,
    ensure_owner,
    fetch,
    get_visible,
    job_of_task_credential,
    list_visible,
    require_node,
    require_user,
    unfinished_task_of,
)
from .context import Ctx
from .results import Listing, NodeSecret
from .tokens import issue, revoke_all

log = structlog.get_logger(__name__)
MAX_LABELS = 64
MAX_FACTS = 64


def _check_labels(labels: Mapping[str, str]) -> dict[str, str]:
    if len(labels) > MAX_LABELS:
        raise InvalidArgument(f"a node has at most {MAX_LABELS} labels")
    for key, value in labels.items():
        if not key or len(key) > 63 or len(value) > 253:
            raise InvalidArgument(f"label {key!r}: keys are 1-63 characters and values at most 253")
    return dict(labels)


async def create_node(
    ctx: Ctx, caller: Caller, *, name: str, project_id: str, labels: Mapping[str, str]
) -> NodeSecret:
    require_user(caller)
    node = NodeRecord(
        id=new_id(),
        name=check_name(name, "node"),
        owner=caller.subject,
        project_id=await check_project_for_create(ctx, caller, project_id),
        labels=_check_labels(labels),
    )
    node = await ctx.store.create_node(node)
    issued = await issue(
        ctx, kind="enrolment", scope="node", subject=node.id, description="enrolment"
    )
    log.info("node.created", node_id=node.id, owner=caller.subject)
    return NodeSecret(node=node, secret=issued.secret)


async def get_node(ctx: Ctx, caller: Caller, node_id: str) -> NodeRecord:
    return await get_visible(ctx, caller, ctx.store.get_node, "node", node_id)


async def list_nodes(
    ctx: Ctx, caller: Caller, *, project_id: str, limit: int, after: str
) -> Listing[NodeRecord]:
    return await list_visible(
        ctx, caller, ctx.store.list_nodes, project_id=project_id, limit=limit, after=after
    )


async def update_node(
    ctx: Ctx, caller: Caller, node_id: str, *, labels: Mapping[str, str], replace: bool
) -> NodeRecord:
    node = await get_node(ctx, caller, node_id)
    await ensure_owner(ctx, caller, node, "node")
    merged = dict(labels) if replace else {**node.labels, **labels}
    return await ctx.store.update_node(node_id, {"labels": _check_labels(merged)})


async def delete_node(ctx: Ctx, caller: Caller, node_id: str) -> None:
    node = await get_node(ctx, caller, node_id)
    await ensure_owner(ctx, caller, node, "node")
    job_id = await unfinished_task_of(ctx, node_id=node_id)
    if job_id is not None:
        raise FailedPrecondition(
            f"node {node_id!r} has unfinished tasks of job {job_id!r}; stop or delete it first"
        )
    await revoke_all(ctx, subject=node_id, kind="node")
    await revoke_all(ctx, subject=node_id, kind="enrolment")
    await ctx.store.delete_node(node_id)
    log.info("node.deleted", node_id=node_id, by=caller.subject)


async def revoke_node_token(ctx: Ctx, caller: Caller, node_id: str) -> NodeRecord:
    node = await get_node(ctx, caller, node_id)
    await ensure_owner(ctx, caller, node, "node")
    revoked = await revoke_all(ctx, subject=node_id, kind="node")
    revoked += await revoke_all(ctx, subject=node_id, kind="enrolment")
    log.info("node.revoked", node_id=node_id, tokens=revoked, by=caller.subject)
    return await ctx.store.update_node(node_id, {"revoked": True})


async def enroll_node(ctx: Ctx, *, enrolment_token: str, facts: Mapping[str, str]) -> NodeSecret:
    """Trade a one-time enrolment token for a node credential (the token is consumed)."""
    if len(facts) > MAX_FACTS or any(len(k) > 63 or len(v) > 1024 for k, v in facts.items()):
        raise InvalidArgument(f"at most {MAX_FACTS} facts, keys ≤ 63 and values ≤ 1024 characters")
    if not enrolment_token:
        raise Unauthenticated("missing enrolment token")
    try:
        token = await ctx.store.get_token_by_hash(hash_token(enrolment_token))
    except NotFound:
        raise Unauthenticated("invalid enrolment token") from None
    if token.kind != "enrolment" or token.revoked:
        raise Unauthenticated("invalid enrolment token")
    if token.expires_at is not None and token.expires_at <= utcnow():
        raise Unauthenticated("enrolment token expired")
    try:
        # Deleting is the atomic "consume": of two concurrent enrolments only one deletes it.
        await ctx.store.delete_token(token.id)
        node = await ctx.store.get_node(token.subject)
    except NotFound:
        raise Unauthenticated("invalid enrolment token") from None
    if node.revoked:
        raise Unauthenticated("node is revoked")
    issued = await issue(ctx, kind="node", scope="node", subject=node.id, description="node")
    node = await ctx.store.update_node(
        node.id, {"enrolled": True, "facts": dict(facts), "last_seen": utcnow()}
    )
    log.info("node.enrolled", node_id=node.id, facts=dict(facts))
    return NodeSecret(node=node, secret=issued.secret)


async def report_presence(
    ctx: Ctx, caller: Caller | None, *, node_id: str, presence: str, at: datetime | None
) -> None:
    """Called by the notifier when an agent connects or disconnects (best effort).

    Without caller metadata the report is taken to come from the (internal) notifier; a node
    credential may only report about itself."""
    if caller is not None and not caller.is_admin and caller.subject != node_id:
        raise PermissionDenied("a node may only report its own presence")
    if presence not in ("online", "offline"):
        raise InvalidArgument("presence must be online or offline")
    node = await fetch(ctx.store.get_node(node_id), "node", node_id)
    when = at or utcnow()
    if node.last_seen is not None and when < node.last_seen and node.presence != "unknown":
        return  # an older report arriving late changes nothing
    await ctx.store.update_node(node_id, {"presence": presence, "last_seen": when})
    log.info("node.presence", node_id=node_id, presence=presence)


async def report_health(ctx: Ctx, caller: Caller, measured: Mapping[str, Any]) -> None:
    """A node's agent reports a health sample of its own node, stamped with the time it came."""
    require_node(caller)
    if job_of_task_credential(caller) is not None:
        raise PermissionDenied("a task credential cannot report its node's health")
    node = await fetch(ctx.store.get_node(caller.subject), "node", caller.subject)
    if node.revoked:
        raise PermissionDenied("this node's credential was revoked")
    sample = NodeHealthRecord.model_validate({**measured, "node_id": node.id, "at": utcnow()})
    await ctx.store.append_node_health(sample, keep=ctx.node_health_keep)


async def get_health(ctx: Ctx, caller: Caller, node_id: str, limit: int) -> list[NodeHealthRecord]:
    """The newest samples of a node the caller can see, oldest first."""
    node = await get_node(ctx, caller, node_id)
    if limit < 0:
        raise InvalidArgument("limit must not be negative")
    keep = ctx.node_health_keep
    return await ctx.store.read_node_health(node.id, min(limit, keep) if limit else keep)
