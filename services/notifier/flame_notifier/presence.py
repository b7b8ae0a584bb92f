"""Best-effort presence reports to the controller, retried until they get through.

Level-triggered: the reporter keeps the latest presence per node and a worker sends whatever
differs from what the controller last acknowledged, so a flapping agent costs one report and a
controller outage only delays reports."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import structlog

from flame_spec.retry import Backoff

log = structlog.get_logger(__name__)

ReportFn = Callable[[str, bool], Awaitable[None]]


class PresenceReporter:
    def __init__(self, report: ReportFn, *, retry_max: float = 10.0) -> None:
        self._report = report
        self._retry_max = retry_max
        self._desired: dict[str, bool] = {}
        self._sent: dict[str, bool] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def set(self, node_id: str, online: bool) -> None:
        self._desired[node_id] = online
        self._wake.set()

    def reported(self, node_id: str) -> bool | None:
        """What the controller last accepted for ``node_id`` (None: nothing yet)."""
        return self._sent.get(node_id)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="presence-reporter")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        backoff = Backoff(0.2, self._retry_max)
        while True:
            await self._wake.wait()
            self._wake.clear()
            failed = False
            for node_id, online in list(self._desired.items()):
                if self._sent.get(node_id) == online:
                    continue
                try:
                    await self._report(node_id, online)
                except Exception as exc:
                    failed = True
                    log.warning("presence.report_failed", node_id=node_id, error=str(exc))
                    continue
                self._sent[node_id] = online
                log.info("presence.reported", node_id=node_id, online=online)
            if failed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=backoff.next())
                self._wake.set()
            else:
                backoff.reset()
