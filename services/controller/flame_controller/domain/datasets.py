"""Datasets: metadata only (the data never leaves its node).

A user registers a dataset on a node they can see; a node registers one on itself (owner =
the node's owner, no uri: only the node resolves where the data is)."""

from __future__ import annotations

import structlog

from flame_service.auth import Caller
from flame_service.errors import FailedPrecondition, InvalidArgument, PermissionDenied

from ..store.records import DatasetRecord, new_id
from .access import (
    check_name,
    check_project_for_create,
    ensure_owner,
    ensure_visible,
    fetch,
    get_visible,
    job_of_task_credential,
    list_visible,
    require_user,
    unfinished_task_of,
    visibility,
)
from .context import Ctx
from .results import Listing

log = structlog.get_logger(__name__)


def _check_text(value: str, field: str, cap: int) -> str:
    if len(value) > cap:
        raise InvalidArgument(f"{field} is longer than {cap} characters")
    return value


async def create_dataset(
    ctx: Ctx,
    caller: Caller,
    *,
    name: str,
    project_id: str,
    node_id: str,
    realm: str,
    format: str,
    size_bytes: int,
    uri: str,
    description: str,
    num_samples: int = 0,
) -> DatasetRecord:
    check_name(name, "dataset")
    if size_bytes < 0:
        raise InvalidArgument("size_bytes must not be negative")
    if num_samples < 0:
        raise InvalidArgument("num_samples must not be negative")
    if caller.scope == "node":
        if job_of_task_credential(caller) is not None:
            raise PermissionDenied("a task credential cannot register datasets")
        if node_id and node_id != caller.subject:
            raise InvalidArgument("a node registers datasets on itself only; omit node_id")
        node = await fetch(ctx.store.get_node(caller.subject), "node", caller.subject)
        owner, project, uri = node.owner, node.project_id, ""
    else:
        require_user(caller)
        if not node_id:
            raise InvalidArgument("node_id is required: the node that holds the data")
        node = await fetch(ctx.store.get_node(node_id), "node", node_id)
        await ensure_visible(ctx, caller, node, "node")
        owner = caller.subject
        project = await check_project_for_create(ctx, caller, project_id)
    dataset = DatasetRecord(
        id=new_id(),
        name=name,
        owner=owner,
        project_id=project,
        node_id=node.id,
        realm=_check_text(realm, "realm", 256),
        format=_check_text(format, "format", 64),
        size_bytes=size_bytes,
        num_samples=num_samples,
        uri=_check_text(uri, "uri", 2048),
        description=_check_text(description, "description", 2000),
    )
    created = await ctx.store.create_dataset(dataset)
    log.info("dataset.created", dataset_id=created.id, node_id=node.id, owner=owner)
    return created


async def get_dataset(ctx: Ctx, caller: Caller, dataset_id: str) -> DatasetRecord:
    return await get_visible(ctx, caller, ctx.store.get_dataset, "dataset", dataset_id)


async def list_datasets(
    ctx: Ctx, caller: Caller, *, project_id: str, limit: int, after: str
) -> Listing[DatasetRecord]:
    return await list_visible(
        ctx, caller, ctx.store.list_datasets, project_id=project_id, limit=limit, after=after
    )


async def all_visible_datasets(ctx: Ctx, caller: Caller) -> list[DatasetRecord]:
    owners, projects = await visibility(ctx, caller)
    out: list[DatasetRecord] = []
    after: str | None = None
    while True:
        items, after = await ctx.store.list_datasets(
            owners=owners, project_ids=projects, limit=1000, after=after
        )
        out.extend(items)
        if after is None:
            return out


async def update_dataset(
    ctx: Ctx, caller: Caller, dataset_id: str, *, description: str | None, realm: str | None
) -> DatasetRecord:
    dataset = await get_dataset(ctx, caller, dataset_id)
    await ensure_owner(ctx, caller, dataset, "dataset")
    changes: dict[str, object] = {}
    if description is not None:
        changes["description"] = _check_text(description, "description", 2000)
    if realm is not None:
        changes["realm"] = _check_text(realm, "realm", 256)
    if not changes:
        return dataset
    return await ctx.store.update_dataset(dataset_id, changes)


async def delete_dataset(ctx: Ctx, caller: Caller, dataset_id: str) -> None:
    dataset = await get_dataset(ctx, caller, dataset_id)
    await ensure_owner(ctx, caller, dataset, "dataset")
    job_id = await unfinished_task_of(ctx, node_id=dataset.node_id, dataset_id=dataset_id)
    if job_id is not None:
        raise FailedPrecondition(
            f"dataset {dataset_id!r} feeds an unfinished task of job {job_id!r}; "
            "stop or delete that job first"
        )
    await ctx.store.delete_dataset(dataset_id)
    log.info("dataset.deleted", dataset_id=dataset_id, by=caller.subject)
