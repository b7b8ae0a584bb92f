"""Designs (job templates): a name and a schema of roles and channels, validated on write."""

from __future__ import annotations

import json
from typing import Any

import structlog

from flame_service.auth import Caller
from flame_service.errors import FailedPrecondition, InvalidArgument
from flame_spec import dump

from ..jobs.builder import parse_design
from ..store.records import DesignRecord, new_id
from .access import (
    check_name,
    check_project_for_create,
    ensure_owner,
    get_visible,
    list_visible,
    require_user,
)
from .context import Ctx
from .results import Listing

log = structlog.get_logger(__name__)
MAX_SCHEMA_CHARS = 1024 * 1024


def parse_schema_json(text: str) -> dict[str, Any]:
    """Parse and validate a design schema given as JSON text; return it normalized."""
    if not text:
        raise InvalidArgument("schema_json is required: the design's roles and channels")
    if len(text) > MAX_SCHEMA_CHARS:
        raise InvalidArgument(f"schema_json is longer than {MAX_SCHEMA_CHARS} characters")
    try:
        schema = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidArgument(f"schema_json is not valid JSON: {exc}") from None
    return dump(parse_design(schema))


async def create_design(
    ctx: Ctx, caller: Caller, *, name: str, project_id: str, description: str, schema_json: str
) -> DesignRecord:
    require_user(caller)
    if len(description) > 2000:
        raise InvalidArgument("description is longer than 2000 characters")
    design = DesignRecord.model_validate(
        {
            "id": new_id(),
            "name": check_name(name, "design"),
            "owner": caller.subject,
            "project_id": await check_project_for_create(ctx, caller, project_id),
            "description": description,
            "schema": parse_schema_json(schema_json),
        }
    )
    created = await ctx.store.create_design(design)
    log.info("design.created", design_id=created.id, owner=caller.subject)
    return created


async def get_design(ctx: Ctx, caller: Caller, design_id: str) -> DesignRecord:
    return await get_visible(ctx, caller, ctx.store.get_design, "design", design_id)


async def list_designs(
    ctx: Ctx, caller: Caller, *, project_id: str, limit: int, after: str
) -> Listing[DesignRecord]:
    return await list_visible(
        ctx, caller, ctx.store.list_designs, project_id=project_id, limit=limit, after=after
    )


async def update_design(
    ctx: Ctx,
    caller: Caller,
    design_id: str,
    *,
    description: str | None,
    schema_json: str | None,
) -> DesignRecord:
    design = await get_design(ctx, caller, design_id)
    await ensure_owner(ctx, caller, design, "design")
    changes: dict[str, Any] = {}
    if description is not None:
        if len(description) > 2000:
            raise InvalidArgument("description is longer than 2000 characters")
        changes["description"] = description
    if schema_json is not None:
        schema = parse_schema_json(schema_json)
        if schema != design.schema_:
            changes["schema"] = schema
            changes["version"] = design.version + 1
    if not changes:
        return design
    updated = await ctx.store.update_design(design_id, changes)
    log.info("design.updated", design_id=design_id, fields=sorted(changes), by=caller.subject)
    return updated


async def delete_design(ctx: Ctx, caller: Caller, design_id: str) -> None:
    design = await get_design(ctx, caller, design_id)
    await ensure_owner(ctx, caller, design, "design")
    jobs, _ = await ctx.store.list_jobs(design_id=design_id, limit=1)
    if jobs:
        raise FailedPrecondition(
            f"design {design_id!r} is used by job {jobs[0].id!r}; delete its jobs first"
        )
    await ctx.store.delete_design(design_id)
    log.info("design.deleted", design_id=design_id, by=caller.subject)
