"""Jobs: created from a design, a code version, a spec and datasets; started and stopped by
setting ``desired_state`` (the reconciler drives the state machine)."""

from __future__ import annotations

import json
from typing import Any

import structlog

from flame_service.auth import Caller
from flame_service.errors import (
    Conflict,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from flame_spec import DesignSchema, JobSpec, dump

from ..jobs.builder import DatasetInfo, PlannedTask, build_tasks, parse_design, parse_job_spec
from ..jobs.states import ACTIVE_JOB_STATES
from ..store.records import CodeRecord, DesignRecord, JobRecord, TaskRecord, new_id
from ..tracking_accounts import JobTracking, names_for
from .access import (
    check_name,
    check_project_for_create,
    ensure_owner,
    ensure_visible,
    fetch,
    get_visible,
    list_visible,
    require_user,
)
from .context import Ctx
from .datasets import all_visible_datasets
from .designs import get_design
from .results import Listing
from .tokens import revoke_all

log = structlog.get_logger(__name__)
MAX_SPEC_CHARS = 1024 * 1024
CAS_RETRIES = 10


def parse_spec_json(text: str) -> dict[str, Any]:
    if not text:
        raise InvalidArgument("spec_json is required: datasets per group, rounds, ...")
    if len(text) > MAX_SPEC_CHARS:
        raise InvalidArgument(f"spec_json is longer than {MAX_SPEC_CHARS} characters")
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidArgument(f"spec_json is not valid JSON: {exc}") from None
    if not isinstance(spec, dict):
        raise InvalidArgument("spec_json must be a JSON object")
    return spec


def _check_tracking_uri(ctx: Ctx, spec: JobSpec) -> None:
    """A job may log only to the platform's tracking servers (not, say, into a file of the
    control plane's host, or to a server the platform does not know)."""
    uri = spec.tracking.uri
    if uri is None or uri in ctx.tracking_uris:
        return
    allowed = ", ".join(sorted(ctx.tracking_uris)) or "none; leave tracking.uri out"
    raise InvalidArgument(
        f"tracking.uri {uri!r} is not a tracking server of this platform (allowed: {allowed})"
    )


def _tracking_names(
    ctx: Ctx, job_id: str, job_name: str, owner: str, spec: JobSpec
) -> JobTracking | None:
    """The job's experiment, model and account on the tracking server, if it has accounts and
    the job logs there."""
    accounts = ctx.tracking_accounts
    if not spec.tracking.enabled or accounts is None:
        return None
    if (spec.tracking.uri or ctx.tracking_uri) != accounts.uri:
        return None
    return names_for(job_id, job_name, owner, spec.tracking.experiment)


async def prepare_tracking(ctx: Ctx, job: JobRecord) -> None:
    """The job's experiment, model and account on the tracking server (idempotent). The
    reconciler calls it beside the job's deployment: the job's aggregator waits for its account
    (:class:`flame.tracking.MlflowTracker`), the start of the job does not."""
    spec = parse_job_spec(job.spec)
    names = _tracking_names(ctx, job.id, job.name, job.owner, spec)
    if names is not None and ctx.tracking_accounts is not None:
        await ctx.tracking_accounts.prepare(names, job.owner)


async def _code_for(ctx: Ctx, design: DesignRecord, version: int) -> CodeRecord:
    if version < 0:
        raise InvalidArgument("code_version must be positive (0 = latest)")
    try:
        return await ctx.store.get_code(design.id, version or None)
    except NotFound:
        if version:
            raise NotFound(f"code version {version} of design {design.id!r} not found") from None
        raise FailedPrecondition(
            f"design {design.id!r} has no code yet; push code before creating a job"
        ) from None


def _check_code_has_roles(
    design: DesignRecord, design_spec: DesignSchema, code: CodeRecord
) -> None:
    missing = [r.name for r in design_spec.roles if r.name not in code.roles]
    if missing:
        raise InvalidArgument(
            f"code version {code.version} of design {design.id!r} has no folder for role(s) "
            + ", ".join(map(repr, missing))
        )


async def _check_nodes(ctx: Ctx, planned: list[PlannedTask]) -> None:
    """Every node a task is placed on still exists and may still run tasks."""
    for task in planned:
        if task.node_id is None:
            continue
        try:
            node = await ctx.store.get_node(task.node_id)
        except NotFound:
            raise InvalidArgument(
                f"dataset {task.dataset_id!r} is on node {task.node_id!r}, which no longer exists"
            ) from None
        if node.revoked:
            raise InvalidArgument(
                f"dataset {task.dataset_id!r} is on node {node.id!r}, whose credential is revoked"
            )


async def _plan(
    ctx: Ctx,
    caller: Caller,
    *,
    job_id: str,
    job_name: str,
    owner: str,
    design: DesignRecord,
    code: CodeRecord,
    spec_raw: dict[str, Any],
) -> tuple[dict[str, Any], list[TaskRecord]]:
    """Validate everything a job needs and expand it into task records (nothing is stored)."""
    spec = parse_job_spec(spec_raw)
    _check_tracking_uri(ctx, spec)
    design_spec = parse_design(design.schema_)
    _check_code_has_roles(design, design_spec, code)
    datasets = {d.id: d for d in await all_visible_datasets(ctx, caller)}
    infos = {
        d.id: DatasetInfo(
            id=d.id, name=d.name, node_id=d.node_id, format=d.format, num_samples=d.num_samples
        )
        for d in datasets.values()
    }
    planned: list[PlannedTask] = build_tasks(
        job_id=job_id,
        job_name=job_name,
        owner=owner,
        design_name=design.name,
        design=design_spec,
        spec=spec,
        datasets=infos,
        apiserver_url=ctx.apiserver_url,
        tracking_uri=ctx.tracking_uri,
    )
    tracking = _tracking_names(ctx, job_id, job_name, owner, spec)
    if tracking is not None:
        for task in planned:
            task.config["tracking"] = {
                "experiment": tracking.experiment,
                "model_name": tracking.model_name,
                "username": tracking.username,
            }
    await _check_nodes(ctx, planned)
    tasks = [
        TaskRecord(
            id=t.id,
            job_id=job_id,
            role=t.role,
            index=t.index,
            node_id=t.node_id,
            dataset_id=t.dataset_id,
            groups=dict(t.groups),
            data_consumer=t.data_consumer,
            config=t.config,
        )
        for t in planned
    ]
    return dump(spec), tasks


async def create_job(
    ctx: Ctx,
    caller: Caller,
    *,
    name: str,
    project_id: str,
    design_id: str,
    code_version: int,
    spec_json: str,
) -> JobRecord:
    require_user(caller)
    check_name(name, "job")
    project = await check_project_for_create(ctx, caller, project_id)
    design = await get_design(ctx, caller, design_id)
    code = await _code_for(ctx, design, code_version)
    job_id = new_id()
    spec, tasks = await _plan(
        ctx,
        caller,
        job_id=job_id,
        job_name=name,
        owner=caller.subject,
        design=design,
        code=code,
        spec_raw=parse_spec_json(spec_json),
    )
    job = JobRecord(
        id=job_id,
        name=name,
        owner=caller.subject,
        project_id=project,
        design_id=design.id,
        code_version=code.version,
        spec=spec,
        reason="created",
    )
    # The job first (a duplicate name stops here), then its tasks; a ready job with
    # desired_state ready is left alone by the reconciler until it is started.
    job = await ctx.store.create_job(job)
    try:
        await ctx.store.put_tasks(tasks)
    except BaseException:
        await ctx.store.delete_job(job_id)
        raise
    log.info("job.created", job_id=job_id, tasks=len(tasks), owner=caller.subject)
    return job


async def get_job(ctx: Ctx, caller: Caller, job_id: str) -> JobRecord:
    return await get_visible(ctx, caller, ctx.store.get_job, "job", job_id)


async def list_jobs(
    ctx: Ctx, caller: Caller, *, project_id: str, limit: int, after: str
) -> Listing[JobRecord]:
    return await list_visible(
        ctx, caller, ctx.store.list_jobs, project_id=project_id, limit=limit, after=after
    )


async def list_tasks(ctx: Ctx, caller: Caller, job_id: str) -> list[TaskRecord]:
    await get_job(ctx, caller, job_id)
    return await ctx.store.list_tasks(job_id=job_id)


def _editable(job: JobRecord) -> None:
    if job.state != "ready" or job.desired_state != "ready":
        raise FailedPrecondition(
            f"job {job.id!r} is {job.state} (desired {job.desired_state}); "
            "only a job that is ready and not started can be updated"
        )


async def update_job(
    ctx: Ctx,
    caller: Caller,
    job_id: str,
    *,
    spec_json: str | None,
    code_version: int | None,
) -> JobRecord:
    async with ctx.job_lock(job_id):
        job = await get_job(ctx, caller, job_id)
        await ensure_owner(ctx, caller, job, "job")
        _editable(job)
        if spec_json is None and code_version is None:
            return await _finish_update(ctx, job)
        design = await fetch(ctx.store.get_design(job.design_id), "design", job.design_id)
        version = job.code_version if code_version is None else code_version
        code = await _code_for(ctx, design, version)
        spec, tasks = await _plan(
            ctx,
            caller,
            job_id=job.id,
            job_name=job.name,
            owner=job.owner,
            design=design,
            code=code,
            spec_raw=job.spec if spec_json is None else parse_spec_json(spec_json),
        )
        # One atomic write holds the whole update (the spec and the new task set), so a crash
        # before the tasks are replaced loses nothing: the next update or start finishes it.
        try:
            pending = await ctx.store.cas_job(
                job_id,
                job.version,
                {"spec": spec, "code_version": code.version, "reason": "updated", "replan": tasks},
            )
        except Conflict:
            raise Conflict(f"job {job_id!r} changed while it was being updated; retry") from None
        return await _finish_update(ctx, pending)


async def _finish_update(ctx: Ctx, job: JobRecord) -> JobRecord:
    """Store the task set an update wrote into ``job.replan``, then clear it (under the job's
    lock; the job is ready and not started, so no task has run and nothing is lost)."""
    if job.replan is None:
        return job
    await ctx.store.replace_tasks(job.id, job.replan)
    done = await ctx.store.cas_job(job.id, job.version, {"replan": None})
    log.info("job.updated", job_id=job.id, tasks=len(job.replan))
    return done


async def _may_run(ctx: Ctx, caller: Caller, job: JobRecord) -> None:
    """Owners, admins and members of the job's project may start and stop it."""
    await ensure_visible(ctx, caller, job, "job")
    if caller.scope not in ("admin", "user"):
        raise PermissionDenied("starting and stopping jobs needs a user token")


async def _set_desired(ctx: Ctx, caller: Caller, job_id: str, desired: str, verb: str) -> JobRecord:
    async with ctx.job_lock(job_id):
        for _ in range(CAS_RETRIES):
            job = await get_job(ctx, caller, job_id)
            await _may_run(ctx, caller, job)
            if desired == "running" and job.terminal:
                # a finished job is never run again in place: a new run is a new job
                raise FailedPrecondition(
                    f"job {job_id!r} already ended ({job.state}); a new run is a new job "
                    "(flamectl job rerun)"
                )
            if job.desired_state == desired:
                return job
            if desired == "running" and job.state != "ready":
                raise FailedPrecondition(
                    f"job {job_id!r} is {job.state}; only a ready job can start"
                )
            if desired == "stopped" and job.terminal:
                raise FailedPrecondition(f"job {job_id!r} already ended ({job.state})")
            if desired == "running":
                job = await _finish_update(ctx, job)
            try:
                updated = await ctx.store.cas_job(
                    job_id,
                    job.version,
                    {"desired_state": desired, "reason": f"{verb} requested by {caller.subject}"},
                )
            except Conflict:
                continue
            log.info(f"job.{verb}_requested", job_id=job_id, by=caller.subject)
            ctx.kick(job_id)
            return updated
    raise Conflict(f"job {job_id!r} keeps changing; retry")


async def start_job(ctx: Ctx, caller: Caller, job_id: str) -> JobRecord:
    return await _set_desired(ctx, caller, job_id, "running", "start")


async def stop_job(ctx: Ctx, caller: Caller, job_id: str) -> JobRecord:
    return await _set_desired(ctx, caller, job_id, "stopped", "stop")


async def delete_job(ctx: Ctx, caller: Caller, job_id: str) -> None:
    async with ctx.job_lock(job_id):
        job = await get_job(ctx, caller, job_id)
        await ensure_owner(ctx, caller, job, "job")
        active = job.state in ACTIVE_JOB_STATES
        if active or (job.desired_state == "running" and not job.terminal):
            raise FailedPrecondition(f"job {job_id!r} is {job.state}; stop it before deleting it")
        await revoke_all(ctx, subject=job_id, kind="task")
        await ctx.store.delete_job(job_id)
    log.info("job.deleted", job_id=job_id, by=caller.subject)
