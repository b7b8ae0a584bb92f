"""The controller's Prometheus series, derived from the store before each scrape.

Level-triggered like the reconciler: a refresh reads jobs, tasks, metrics and nodes and sets
the gauges from what is stored, so a restarted controller reports the same values. Task start
latency (a task's last move into ``scheduled`` to its move into ``running``) is observed once per
task attempt this process sees; a restart observes the recent ones again, which Prometheus takes
as a counter reset. Refreshes closer together than ``min_interval`` reuse the last one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from typing import Any, get_args

from prometheus_client import CollectorRegistry, Gauge, Histogram

from .store.base import Store
from .store.records import (
    JOB_TERMINAL_STATES,
    JobRecord,
    JobState,
    Presence,
    TaskRecord,
    utcnow,
)

JOB_STATES: tuple[str, ...] = get_args(JobState)
PRESENCES: tuple[str, ...] = get_args(Presence)
START_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class ControllerMetrics:
    def __init__(
        self,
        store: Store,
        *,
        recent: timedelta = timedelta(hours=1),
        min_interval: float = 2.0,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.store = store
        self.recent = recent
        self.min_interval = min_interval
        self.clock = clock
        self.registry = CollectorRegistry()
        self.jobs = Gauge("flame_jobs", "Jobs by state", ["state"], registry=self.registry)
        self.job_rounds = Gauge(
            "flame_job_rounds",
            "Rounds a job has reported (highest metric step), for jobs running or ended recently",
            ["job_id"],
            registry=self.registry,
        )
        self.task_start = Histogram(
            "flame_task_start_seconds",
            "Time from a task attempt being scheduled to it running",
            ["started_by"],
            buckets=START_BUCKETS,
            registry=self.registry,
        )
        self.nodes = Gauge(
            "flame_nodes", "Enrolled nodes by presence", ["presence"], registry=self.registry
        )
        self._observed: set[tuple[str, int]] = set()
        # per recent job: the highest step seen and the store position read up to, so that a
        # scrape reads the metrics stored since the last one, not a long job's whole history
        self._rounds: dict[str, tuple[int, int]] = {}
        self._last = 0.0
        self._lock = asyncio.Lock()

    async def refresh(self) -> None:
        async with self._lock:
            if time.monotonic() - self._last < self.min_interval:
                return
            await self._refresh()
            self._last = time.monotonic()

    async def _refresh(self) -> None:
        now = self.clock()
        counts = dict.fromkeys(JOB_STATES, 0)
        rounds: dict[str, int] = {}
        async for job in _all(self.store.list_jobs):
            counts[job.state] = counts.get(job.state, 0) + 1
            if not self._recent(job, now):
                continue
            highest, read_to = self._rounds.get(job.id, (0, 0))
            new, read_to = await self.store.metrics_since(job.id, read_to)
            rounds[job.id] = max([highest, *(m.step for m in new)])
            self._rounds[job.id] = (rounds[job.id], read_to)
            for task in await self.store.list_tasks(job_id=job.id):
                self._observe_start(task)
        for state, n in counts.items():
            self.jobs.labels(state).set(n)
        self._rounds = {job_id: self._rounds[job_id] for job_id in rounds}  # recent jobs only
        self.job_rounds.clear()
        for job_id, n in rounds.items():
            self.job_rounds.labels(job_id).set(n)
        presence = dict.fromkeys(PRESENCES, 0)
        async for node in _all(self.store.list_nodes):
            if node.enrolled and not node.revoked:
                presence[node.presence] = presence.get(node.presence, 0) + 1
        for name, n in presence.items():
            self.nodes.labels(name).set(n)

    def _recent(self, job: JobRecord, now: datetime) -> bool:
        if job.state not in JOB_TERMINAL_STATES:
            return job.state != "ready"
        ended = job.transitions[-1].at if job.transitions else job.created_at
        return now - ended <= self.recent

    def _observe_start(self, task: TaskRecord) -> None:
        key = (task.id, task.attempt)
        if key in self._observed:
            return
        latency = start_latency(task)
        if latency is None:
            return
        self._observed.add(key)
        self.task_start.labels("node" if task.node_id else "deployer").observe(latency)


def start_latency(task: TaskRecord) -> float | None:
    """Seconds from the last move into ``scheduled`` to the move into ``running`` after it."""
    scheduled: datetime | None = None
    latency: float | None = None
    for t in task.transitions:
        if t.to_state == "scheduled":
            scheduled, latency = t.at, None
        elif t.to_state == "running" and scheduled is not None and latency is None:
            latency = max(0.0, (t.at - scheduled).total_seconds())
    return latency


async def _all(list_page: Callable[..., Any], **filters: Any) -> AsyncIterator[Any]:
    after: str | None = None
    while True:
        page = await list_page(after=after, **filters)
        for item in page.items:
            yield item
        if not page.next_cursor:
            return
        after = page.next_cursor
