"""Node-facing operations: what a flamelet (node credential) or a deployer-run task (per-job
task credential) may do with its own tasks.  Anything else answers NotFound."""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Sequence
from typing import cast

import structlog

from flame_service.auth import Caller
from flame_service.errors import Conflict, InvalidArgument, NotFound, PermissionDenied

from ..jobs.states import late_report, task_transition
from ..store.records import (
    LOG_SOURCES,
    JobRecord,
    LogLineRecord,
    MetricRecord,
    TaskRecord,
    TaskState,
    utcnow,
)
from .access import can_see, job_of_task_credential, not_found, require_node
from .context import Ctx
from .keys import keyed_json
from .results import EndpointView, LogPage, MetricsView, NewLogLine, NewMetric, TaskBundle
from .service_logs import levels_from

log = structlog.get_logger(__name__)
REPORTABLE = frozenset({"running", "completed", "failed"})
MAX_LOG_LINES = 5000
MAX_LINE_CHARS = 16 * 1024
MAX_METRICS = 10_000
MAX_LOG_LIMIT = 5000
ENDPOINT_RE = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$")
CAS_RETRIES = 10


def owns_task(caller: Caller, task: TaskRecord) -> bool:
    """A node owns the tasks assigned to it; a task credential the deployer-run tasks of its job."""
    if caller.scope != "node":
        return False
    job_id = job_of_task_credential(caller)
    if job_id is not None:
        return task.job_id == job_id and task.node_id is None
    return task.node_id == caller.subject


async def own_task(ctx: Ctx, caller: Caller, task_id: str) -> TaskRecord:
    require_node(caller)
    try:
        task = await ctx.store.get_task(task_id)
    except NotFound:
        raise not_found("task", task_id) from None
    if not owns_task(caller, task):
        raise not_found("task", task_id)
    return task


async def list_assigned_tasks(ctx: Ctx, caller: Caller) -> list[TaskRecord]:
    require_node(caller)
    job_id = job_of_task_credential(caller)
    if job_id is not None:
        return [t for t in await ctx.store.list_tasks(job_id=job_id) if t.node_id is None]
    return await ctx.store.list_tasks(node_id=caller.subject)


async def fetch_task(ctx: Ctx, caller: Caller, task_id: str) -> TaskBundle:
    task = await own_task(ctx, caller, task_id)
    job = await ctx.store.get_job(task.job_id)
    code = await ctx.store.get_code(job.design_id, job.code_version)
    return TaskBundle(
        task=task,
        config=keyed_json(ctx, task.config),
        code=code,
        code_zip=await ctx.store.get_blob(code.blob_key),
    )


async def report_task_status(
    ctx: Ctx, caller: Caller, *, task_id: str, state: str, reason: str, attempt: int
) -> TaskRecord:
    if state not in REPORTABLE:
        raise InvalidArgument(f"state must be one of running, completed, failed (got {state!r})")
    if len(reason) > 4096:
        reason = reason[:4096]
    for _ in range(CAS_RETRIES):
        task = await own_task(ctx, caller, task_id)
        if attempt > task.attempt:
            raise InvalidArgument(
                f"attempt {attempt} of task {task_id!r} has not been started (current "
                f"attempt: {task.attempt})"
            )
        if attempt < task.attempt:
            raise Conflict(f"attempt {attempt} of task {task_id!r} is stale (now {task.attempt})")
        if task.state == state:
            return task  # a repeated report changes nothing
        why = reason or f"reported by {caller.subject}"
        if task.state == "terminated" and state != "running":
            # given up while its node was away: what its process did, now that it is known
            change = late_report(task, cast(TaskState, state), f"{why} (reported late)")
        else:
            change = task_transition(task, cast(TaskState, state), why)
        try:
            updated = await ctx.store.cas_task(task_id, task.version, change.changes, change.record)
        except Conflict:
            continue
        log.info("task.status_reported", task_id=task_id, job_id=task.job_id, state=state)
        ctx.kick(task.job_id)
        return updated
    raise Conflict(f"task {task_id!r} keeps changing; retry")


async def append_logs(ctx: Ctx, caller: Caller, lines: Sequence[NewLogLine]) -> int:
    require_node(caller)
    if len(lines) > MAX_LOG_LINES:
        raise InvalidArgument(f"at most {MAX_LOG_LINES} log lines per request")
    tasks: dict[str, TaskRecord] = {}
    by_job: dict[str, list[LogLineRecord]] = defaultdict(list)
    marks: dict[tuple[str, str], int] = {}  # (task, stream): the last mark stored or taken
    now = utcnow()
    for line in lines:
        if line.stream not in ("stdout", "stderr", "agent"):
            raise InvalidArgument(
                f"log stream must be stdout, stderr or agent (got {line.stream!r})"
            )
        if line.task_id not in tasks:
            tasks[line.task_id] = await own_task(ctx, caller, line.task_id)
        task = tasks[line.task_id]
        if line.mark > 0:  # a line sent again after a lost answer is already stored: skip it
            key = (task.id, line.stream)
            if key not in marks:
                marks[key] = await ctx.store.last_log_mark(task.job_id, task.id, line.stream)
            if line.mark <= marks[key]:
                continue
            marks[key] = line.mark
        by_job[task.job_id].append(
            LogLineRecord.model_validate(
                {
                    "job_id": task.job_id,
                    "task_id": task.id,
                    "node_id": task.node_id or "",
                    "stream": line.stream,
                    "line": line.line[:MAX_LINE_CHARS],
                    "at": line.at or now,
                    "mark": max(line.mark, 0),
                }
            )
        )
    last = 0
    for records in by_job.values():
        last = await ctx.store.append_logs(records)
    return last


async def get_logs(
    ctx: Ctx,
    caller: Caller,
    *,
    job_id: str,
    task_id: str,
    after_seq: int,
    limit: int,
    source: str = "",
    node_id: str = "",
    min_level: str = "",
) -> LogPage:
    """A user reads the logs of a job they can see; a node only those of its own tasks.
    ``source``, ``node_id`` and ``min_level`` narrow the lines ("" = any)."""
    if after_seq < 0 or limit < 0:
        raise InvalidArgument("after_seq and limit must not be negative")
    if source and source not in LOG_SOURCES:
        raise InvalidArgument(f"source must be one of {', '.join(LOG_SOURCES)} (got {source!r})")
    levels = levels_from(min_level)
    limit = min(limit or 1000, MAX_LOG_LIMIT)
    if caller.scope == "node":
        if not task_id:
            raise InvalidArgument("a node reads logs per task: give task_id")
        task = await own_task(ctx, caller, task_id)
        if job_id and job_id != task.job_id:
            raise not_found("task", task_id)
        job_id = task.job_id
    else:
        job = await _visible_job(ctx, caller, job_id)
        job_id = job.id
    lines = await ctx.store.read_logs(
        job_id,
        task_id=task_id or None,
        after_seq=after_seq,
        limit=limit,
        source=source or None,
        node_id=node_id or None,
        levels=levels,
    )
    dropped = await ctx.store.log_dropped(job_id)
    return LogPage(lines=lines, last_seq=lines[-1].seq if lines else after_seq, dropped=dropped)


async def _visible_job(ctx: Ctx, caller: Caller, job_id: str) -> JobRecord:
    try:
        job = await ctx.store.get_job(job_id)
    except NotFound:
        raise not_found("job", job_id) from None
    if not await can_see(ctx, caller, job):
        raise not_found("job", job_id)
    return job


async def report_metrics(
    ctx: Ctx,
    caller: Caller,
    *,
    task_id: str,
    metrics: Sequence[NewMetric],
    run_uri: str,
    model_uri: str,
) -> None:
    task = await own_task(ctx, caller, task_id)
    if len(metrics) > MAX_METRICS:
        raise InvalidArgument(f"at most {MAX_METRICS} metrics per report")
    now = utcnow()
    for m in metrics:
        if not m.key or len(m.key) > 250:
            raise InvalidArgument("metric keys are 1-250 characters")
        if not math.isfinite(m.value):
            raise InvalidArgument(f"metric {m.key!r} at step {m.step} is not a finite number")
    # Idempotent: a task has one value per metric and step, the first reported. A report sent
    # again (its answer was lost, or a restarted aggregator repeats a round) adds nothing.
    stored = await ctx.stored_metrics.of(ctx.store, task.job_id, task.id)
    taken: set[tuple[str, int]] = set()  # within this report
    records = []
    for m in metrics:
        if (m.key, m.step) in stored or (m.key, m.step) in taken:
            continue
        taken.add((m.key, m.step))
        records.append(
            MetricRecord(
                job_id=task.job_id,
                task_id=task.id,
                key=m.key,
                value=m.value,
                step=m.step,
                at=min(m.at, now) if m.at else now,  # when the round ended, by the task's clock
            )
        )
    if records:
        await ctx.store.append_metrics(records)
    info = dict(task.info)
    if run_uri:
        info["run_uri"] = run_uri[:2048]
    if model_uri:
        info["model_uri"] = model_uri[:2048]
    if info != task.info:
        await ctx.store.update_task(task.id, {"info": info})


async def get_metrics(ctx: Ctx, caller: Caller, job_id: str, after_seq: int = 0) -> MetricsView:
    """The job's metrics stored after position ``after_seq`` (0: all of them): a client that
    polls a long job asks after the ``last_seq`` it got and reads only the new points."""
    if caller.scope == "node":
        raise PermissionDenied("job metrics are read with a user token")
    if after_seq < 0:
        raise InvalidArgument("after_seq is a position: 0 or more")
    job = await _visible_job(ctx, caller, job_id)
    metrics, last_seq = await ctx.store.metrics_since(job.id, after_seq)
    # Run and model links come from the task that tracks the job: the top aggregator, which
    # owns no data; fall back to any task that reported one.
    tasks = sorted(await ctx.store.list_tasks(job_id=job.id), key=lambda t: t.data_consumer)
    run_uri = next((str(t.info["run_uri"]) for t in tasks if t.info.get("run_uri")), "")
    model_uri = next((str(t.info["model_uri"]) for t in tasks if t.info.get("model_uri")), "")
    return MetricsView(metrics=metrics, run_uri=run_uri, model_uri=model_uri, last_seq=last_seq)


async def register_endpoint(ctx: Ctx, caller: Caller, *, task_id: str, endpoint: str) -> None:
    task = await own_task(ctx, caller, task_id)
    match = ENDPOINT_RE.match(endpoint)
    if not match or not 0 < int(match.group(2)) < 65536:
        raise InvalidArgument(f"endpoint {endpoint!r} is not host:port")
    if task.endpoint != endpoint:
        await ctx.store.update_task(task.id, {"endpoint": endpoint})
    log.info("task.endpoint_registered", task_id=task_id, endpoint=endpoint)


async def list_endpoints(ctx: Ctx, caller: Caller, ident: str) -> list[EndpointView]:
    """Endpoints of a job's tasks.  ``ident`` is a job id, or for nodes also one of their task
    ids (then the endpoints of that task's job)."""
    if caller.scope == "node":
        job_id = await _node_job(ctx, caller, ident)
    else:
        job_id = (await _visible_job(ctx, caller, ident)).id
    return [
        EndpointView(task_id=t.id, role=t.role, endpoint=t.endpoint)
        for t in await ctx.store.list_tasks(job_id=job_id)
        if t.endpoint
    ]


async def _node_job(ctx: Ctx, caller: Caller, ident: str) -> str:
    """The job a node may discover peers in: one where it runs a task."""
    credential_job = job_of_task_credential(caller)
    if credential_job is not None:
        if ident == credential_job:
            return ident
        task = await own_task(ctx, caller, ident)
        return task.job_id
    if any(t.job_id == ident for t in await ctx.store.list_tasks(node_id=caller.subject)):
        return ident
    task = await own_task(ctx, caller, ident)
    return task.job_id
