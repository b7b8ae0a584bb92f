"""Who may see and change what.

Visibility: an admin sees everything; a user sees what they own and what belongs to a project
they own or are a member of.  Anything else is reported as :class:`NotFound` (never
PermissionDenied, which would confirm that it exists).  Changing a resource needs its owner or
an admin; a project member who can see it but not change it gets PermissionDenied.
Node credentials (scope ``node``) only reach the node-facing operations.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from flame_service.auth import Caller
from flame_service.errors import InvalidArgument, NotFound, PermissionDenied

from .context import Ctx
from .results import Listing

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
JOB_PREFIX = "job:"
T = TypeVar("T")


class Owned(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def owner(self) -> str: ...
    @property
    def project_id(self) -> str: ...


def require_user(caller: Caller) -> None:
    """User-facing operations: scope user or admin."""
    if caller.scope == "node":
        raise PermissionDenied("this operation needs a user token, not a node credential")


def require_admin(caller: Caller) -> None:
    if not caller.is_admin:
        raise PermissionDenied("this operation needs an admin token")


def require_node(caller: Caller) -> None:
    if caller.scope != "node":
        raise PermissionDenied("this operation needs a node credential")


def job_of_task_credential(caller: Caller) -> str | None:
    """The job id of a per-job task credential (subject ``job:<id>``), else None."""
    if caller.scope == "node" and caller.subject.startswith(JOB_PREFIX):
        return caller.subject[len(JOB_PREFIX) :]
    return None


def check_name(value: str, what: str) -> str:
    if not NAME_RE.match(value or ""):
        raise InvalidArgument(
            f"{what} name {value!r} is invalid: 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return value


def page_limit(limit: int) -> int:
    if limit < 0:
        raise InvalidArgument("page limit must not be negative")
    return min(limit or DEFAULT_LIMIT, MAX_LIMIT)


async def caller_projects(ctx: Ctx, caller: Caller) -> list[str]:
    """Ids of the projects the (user) caller owns or is a member of."""
    ids: list[str] = []
    after: str | None = None
    while True:
        items, after = await ctx.store.list_projects(
            owners=[caller.subject], member=caller.subject, limit=1000, after=after
        )
        ids.extend(p.id for p in items)
        if after is None:
            return ids


async def visibility(ctx: Ctx, caller: Caller) -> tuple[list[str] | None, list[str] | None]:
    """``(owners, project_ids)`` filters for store lists; ``(None, None)`` for an admin."""
    require_user(caller)
    if caller.is_admin:
        return None, None
    return [caller.subject], await caller_projects(ctx, caller)


def narrow(
    owners: list[str] | None, projects: list[str] | None, project_id: str
) -> tuple[list[str] | None, list[str] | None]:
    """Apply a ``project_id`` list filter on top of the visibility filters."""
    if not project_id:
        return owners, projects
    if projects is None or project_id in projects:
        return [], [project_id]
    return [], []


async def can_see(ctx: Ctx, caller: Caller, rec: Owned) -> bool:
    if caller.scope == "node":
        return False
    if caller.is_admin or rec.owner == caller.subject:
        return True
    return bool(rec.project_id) and rec.project_id in await caller_projects(ctx, caller)


async def ensure_visible(ctx: Ctx, caller: Caller, rec: Owned, what: str) -> None:
    require_user(caller)
    if not await can_see(ctx, caller, rec):
        raise NotFound(f"{what} {rec.id!r} not found")


async def ensure_owner(ctx: Ctx, caller: Caller, rec: Owned, what: str) -> None:
    """Visible and changeable by the caller (owner or admin)."""
    await ensure_visible(ctx, caller, rec, what)
    if not (caller.is_admin or rec.owner == caller.subject):
        raise PermissionDenied(f"only the owner of {what} {rec.id!r} or an admin may change it")


async def check_project_for_create(ctx: Ctx, caller: Caller, project_id: str) -> str:
    """A new resource may only be shared with a project the caller belongs to."""
    if not project_id:
        return ""
    if caller.is_admin:
        await ctx.store.get_project(project_id)  # NotFound when missing
        return project_id
    if project_id not in await caller_projects(ctx, caller):
        raise NotFound(f"project {project_id!r} not found")
    return project_id


def not_found(what: str, ident: str) -> NotFound:
    return NotFound(f"{what} {ident!r} not found")


async def fetch(getter: Awaitable[T], what: str, ident: str) -> T:
    """Await a store get, turning the store's NotFound into one with a user-facing message."""
    try:
        return await getter
    except NotFound:
        raise not_found(what, ident) from None


async def unfinished_task_of(
    ctx: Ctx, *, node_id: str, dataset_id: str | None = None
) -> str | None:
    """The job id of an unfinished task on ``node_id`` (optionally using ``dataset_id``)."""
    for task in await ctx.store.list_tasks(
        node_id=node_id, states=["pending", "scheduled", "running"]
    ):
        if dataset_id is None or task.dataset_id == dataset_id:
            return task.job_id
    return None


R = TypeVar("R", bound=Owned)
Lister = Callable[..., Awaitable[tuple[list[R], str | None]]]


async def get_visible(
    ctx: Ctx, caller: Caller, get: Callable[[str], Awaitable[R]], what: str, ident: str
) -> R:
    """A resource the caller may see, read with ``get`` (a store getter); anything else is
    ``NotFound``, so that nobody learns what exists beyond what they may see."""
    require_user(caller)
    rec = await fetch(get(ident), what, ident)
    await ensure_visible(ctx, caller, rec, what)
    return rec


async def list_visible(
    ctx: Ctx, caller: Caller, lister: Lister[R], *, project_id: str, limit: int, after: str
) -> Listing[R]:
    """One page of what the caller may see (optionally of one project), from a store lister."""
    owners, projects = narrow(*await visibility(ctx, caller), project_id)
    items, cursor = await lister(
        owners=owners, project_ids=projects, limit=page_limit(limit), after=after or None
    )
    return Listing(items, cursor or "")
