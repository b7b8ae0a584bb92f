"""Projects: an owner shares resources with members; members see what the project holds."""

from __future__ import annotations

import structlog

from flame_service.auth import Caller
from flame_service.errors import InvalidArgument, NotFound, PermissionDenied

from ..store.records import ProjectRecord, new_id
from .access import check_name, fetch, not_found, page_limit, require_user
from .context import Ctx
from .results import Listing

log = structlog.get_logger(__name__)


def _check_description(text: str) -> str:
    if len(text) > 2000:
        raise InvalidArgument("description is longer than 2000 characters")
    return text


async def create_project(ctx: Ctx, caller: Caller, *, name: str, description: str) -> ProjectRecord:
    require_user(caller)
    project = ProjectRecord(
        id=new_id(),
        name=check_name(name, "project"),
        owner=caller.subject,
        description=_check_description(description),
    )
    created = await ctx.store.create_project(project)
    log.info("project.created", project_id=created.id, owner=caller.subject)
    return created


async def get_project(ctx: Ctx, caller: Caller, project_id: str) -> ProjectRecord:
    require_user(caller)
    project = await fetch(ctx.store.get_project(project_id), "project", project_id)
    if not (
        caller.is_admin or project.owner == caller.subject or caller.subject in project.members
    ):
        raise not_found("project", project_id)
    return project


async def _owned_project(ctx: Ctx, caller: Caller, project_id: str) -> ProjectRecord:
    project = await get_project(ctx, caller, project_id)
    if not (caller.is_admin or project.owner == caller.subject):
        raise PermissionDenied(
            f"only the owner of project {project_id!r} or an admin may change it"
        )
    return project


async def list_projects(
    ctx: Ctx, caller: Caller, *, limit: int, after: str
) -> Listing[ProjectRecord]:
    require_user(caller)
    if caller.is_admin:
        items, cursor = await ctx.store.list_projects(limit=page_limit(limit), after=after or None)
    else:
        items, cursor = await ctx.store.list_projects(
            owners=[caller.subject],
            member=caller.subject,
            limit=page_limit(limit),
            after=after or None,
        )
    return Listing(items, cursor or "")


async def update_project(
    ctx: Ctx, caller: Caller, project_id: str, *, description: str | None
) -> ProjectRecord:
    project = await _owned_project(ctx, caller, project_id)
    if description is None:
        return project
    return await ctx.store.update_project(
        project_id, {"description": _check_description(description)}
    )


async def delete_project(ctx: Ctx, caller: Caller, project_id: str) -> None:
    await _owned_project(ctx, caller, project_id)
    await ctx.store.delete_invitations(project_id)
    await ctx.store.delete_project(project_id)
    log.info("project.deleted", project_id=project_id, by=caller.subject)


async def add_member(ctx: Ctx, caller: Caller, project_id: str, user_id: str) -> ProjectRecord:
    await _owned_project(ctx, caller, project_id)
    try:
        await ctx.store.get_user(user_id)
    except NotFound:
        raise not_found("user", user_id) from None
    updated = await ctx.store.add_project_member(project_id, user_id)
    log.info("project.member_added", project_id=project_id, user_id=user_id, by=caller.subject)
    return updated


async def remove_member(ctx: Ctx, caller: Caller, project_id: str, user_id: str) -> ProjectRecord:
    await _owned_project(ctx, caller, project_id)
    updated = await ctx.store.remove_project_member(project_id, user_id)
    log.info("project.member_removed", project_id=project_id, user_id=user_id, by=caller.subject)
    return updated
