"""Distributed logs: the services' own events about a job, stored next to its tasks' output.

The controller ships its events straight to the store; the apiserver and the notifier send
theirs through ``AppendServiceLogs`` (both via :class:`flame_service.logship.LogShipper`).
Lines about a job that does not exist (any more) are left out: nobody could read or delete them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from flame_service.errors import InvalidArgument, NotFound
from flame_service.logship import ShippedLine

from ..store.records import LOG_LEVELS, LogLineRecord, LogSource
from .context import Ctx

SERVICE_SOURCES: tuple[LogSource, ...] = ("controller", "notifier", "apiserver")
MAX_SERVICE_LINES = 5000
MAX_LINE_CHARS = 16 * 1024


def levels_from(min_level: str) -> tuple[str, ...] | None:
    """The levels at or above ``min_level`` ("" = no level filter)."""
    if not min_level:
        return None
    wanted = min_level.lower()
    if wanted not in LOG_LEVELS:
        raise InvalidArgument(f"level must be one of {', '.join(LOG_LEVELS)} (got {min_level!r})")
    return LOG_LEVELS[LOG_LEVELS.index(wanted) :]


async def append_service_logs(ctx: Ctx, source: str, lines: Sequence[ShippedLine]) -> int:
    """Store a service's lines, per job in the order given; returns how many were kept."""
    if source not in SERVICE_SOURCES:
        raise InvalidArgument(f"source must be one of {', '.join(SERVICE_SOURCES)}")
    if len(lines) > MAX_SERVICE_LINES:
        raise InvalidArgument(f"at most {MAX_SERVICE_LINES} log lines per request")
    by_job: dict[str, list[LogLineRecord]] = defaultdict(list)
    for line in lines:
        if not line.job_id:
            raise InvalidArgument("every service log line names its job")
        level = line.level.lower()
        by_job[line.job_id].append(
            LogLineRecord.model_validate(
                {
                    "job_id": line.job_id,
                    "task_id": line.task_id,
                    "node_id": line.node_id,
                    "stream": "service",
                    "source": source,
                    "level": level if level in LOG_LEVELS else "info",
                    "line": line.line[:MAX_LINE_CHARS],
                    "at": line.at,
                }
            )
        )
    kept = 0
    for job_id, records in by_job.items():
        try:
            await ctx.store.get_job(job_id)
        except NotFound:
            continue
        await ctx.store.append_logs(records)
        kept += len(records)
    return kept
