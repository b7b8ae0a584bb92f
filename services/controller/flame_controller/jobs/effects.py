"""The reconciler's side effects: compare-and-set writes with their transitions, events to the
nodes through the notifier, and the deployer (start, stop, shipping output).

Errors say what the loop should do next (STYLE §3, as kopf does): :class:`TemporaryError` —
retry later; :class:`PermanentError` — the job fails with that reason.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import structlog

from flame_service.errors import FlameServiceError, NotFound
from flame_spec import TaskConfig

from ..deployers.base import Deployer, Launch
from ..store.base import Store
from ..store.records import (
    JOB_TERMINAL_STATES,
    JobRecord,
    JobState,
    LogLineRecord,
    NodeRecord,
    TaskRecord,
    TaskState,
)
from .notifier_client import EventKind, Notifier, NotifierUnavailable
from .states import LIVE_TASK_STATES, job_transition, task_transition

log = structlog.get_logger(__name__)
MAX_OUTPUT_BATCHES = 64  # per task per pass


class TemporaryError(Exception):
    """Retrying later may help (the notifier is down, a deployer hiccup)."""

    def __init__(self, message: str, delay: float = 1.0) -> None:
        super().__init__(message)
        self.delay = delay


class PermanentError(Exception):
    """Retrying cannot help: the job fails with this reason."""


class Credentials(Protocol):
    """Per-job credentials for the tasks a deployer runs (the domain's token service)."""

    async def issue(self, job_id: str) -> str: ...

    async def revoke(self, job_id: str) -> int: ...

    def keyed(self, config: TaskConfig) -> TaskConfig:
        """``config`` with the task's data-plane key and its peers' public keys."""
        ...


@dataclass
class Effects:
    """Everything the reconciler changes in the world, in one place."""

    store: Store
    deployer: Deployer | None
    notifier: Notifier | None
    credentials: Credentials
    clock: Callable[[], datetime]
    retry_delay: float = 1.0

    # -- writes ------------------------------------------------------------------------------
    async def set_job(
        self, job: JobRecord, to: JobState, reason: str, *, now: datetime | None = None
    ) -> JobRecord:
        now = now or self.clock()
        transition = job_transition(job, to, reason, now=now)
        changes = dict(transition.changes)
        if to == "starting":
            changes["next_check_at"] = changes["deadline"]
        if to in JOB_TERMINAL_STATES:
            # look again soon to stop what is still live; cleared once nothing is
            changes["next_check_at"] = now
        updated = await self.store.cas_job(job.id, job.version, changes, transition.record)
        log.info("job.transition", job_id=job.id, to=to, reason=reason)
        return updated

    async def set_task(
        self, task: TaskRecord, to: TaskState, reason: str, **extra: Any
    ) -> TaskRecord:
        transition = task_transition(task, to, reason, now=self.clock())
        changes = {**transition.changes, **extra}
        updated = await self.store.cas_task(task.id, task.version, changes, transition.record)
        log.info("task.transition", job_id=task.job_id, task_id=task.id, to=to, reason=reason)
        return updated

    async def fail(self, job: JobRecord, reason: str) -> None:
        """Fail the job; its live tasks are stopped by the following cleanup steps."""
        if job.terminal:
            return
        await self.set_job(job, "failed", reason)
        log.warning("job.failed", job_id=job.id, reason=reason)

    async def finished(self, job: JobRecord) -> None:
        """A terminal job whose tasks are all gone: free what the deployer keeps for it, revoke
        its credentials, stop looking."""
        if self.deployer is not None:
            try:
                await self.deployer.release(job.id)
            except OSError as exc:
                raise TemporaryError(f"cannot release the job's deployed tasks: {exc}") from exc
            except Exception:  # a refusal will not pass on retry; cleanup never holds a job
                log.exception("job.release_failed", job_id=job.id)
        revoked = await self.credentials.revoke(job.id)
        await self.store.cas_job(job.id, job.version, {"next_check_at": None})
        log.info("job.finished", job_id=job.id, state=job.state, credentials_revoked=revoked)

    # -- nodes -------------------------------------------------------------------------------
    async def notify(self, task: TaskRecord, kind: EventKind, reason: str) -> None:
        if self.notifier is None or not task.node_id:
            return
        try:
            await self.notifier.notify(
                task.node_id,
                kind,
                job_id=task.job_id,
                task_id=task.id,
                payload={"reason": reason, "role": task.role, "attempt": task.attempt},
            )
        except NotifierUnavailable as exc:
            raise TemporaryError(str(exc), delay=self.retry_delay) from exc

    async def node(self, node_id: str) -> NodeRecord | None:
        try:
            return await self.store.get_node(node_id)
        except NotFound:
            return None

    async def check_nodes(self, tasks: Sequence[TaskRecord]) -> None:
        """Every node the job's data-consumer tasks need must still exist and not be revoked."""
        first_task_on: dict[str, TaskRecord] = {}
        for t in tasks:
            if t.node_id:
                first_task_on.setdefault(t.node_id, t)
        for node_id, task in first_task_on.items():
            node = await self.node(node_id)
            needs = f"task {task.id} needs node {node_id} (dataset {task.dataset_id}), "
            if node is None:
                raise PermanentError(needs + "which no longer exists")
            if node.revoked:
                raise PermanentError(needs + "whose credential is revoked")

    # -- code --------------------------------------------------------------------------------
    async def code(self, job: JobRecord) -> bytes:
        """The job's code zip, checked against the sha256 recorded when it was pushed."""
        try:
            code = await self.store.get_code(job.design_id, job.code_version)
            blob = await self.store.get_blob(code.blob_key)
        except NotFound as exc:
            raise PermanentError(
                f"code version {job.code_version} of design {job.design_id} is gone: {exc}"
            ) from exc
        digest = hashlib.sha256(blob).hexdigest()
        if digest != code.sha256.lower():
            raise PermanentError(
                f"code version {job.code_version} of design {job.design_id} fails its sha256 "
                f"check: recorded {code.sha256}, stored bytes hash to {digest}"
            )
        return blob

    # -- deployer ----------------------------------------------------------------------------
    async def deploy(self, job: JobRecord, task: TaskRecord) -> str:
        """Start the task's current attempt; returns the deployer's handle."""
        assert self.deployer is not None
        launch = Launch(
            job_id=job.id,
            task_id=task.id,
            role=task.role,
            attempt=task.attempt,
            config=self.credentials.keyed(TaskConfig.model_validate(task.config, strict=False)),
            code=await self.code(job),
            credential=await self.credentials.issue(job.id),
        )
        try:
            return await self.deployer.start(launch)
        except FlameServiceError as exc:
            raise PermanentError(f"cannot start task {task.id}: {exc.message}") from exc
        except OSError as exc:
            raise TemporaryError(f"cannot start task {task.id}: {exc}") from exc

    def handle(self, task: TaskRecord) -> str:
        """The task's handle: the stored one, else the one its attempt gets (the controller may
        have crashed between starting it and storing the handle)."""
        assert self.deployer is not None
        return task.handle or self.deployer.handle_for(task.job_id, task.id, task.attempt)

    async def ship_output(self, task: TaskRecord, *, final: bool) -> None:
        """Copy new output lines of a deployer-run task into the store (at least once: a crash
        between the append and the ack resends those lines). Never holds up the job."""
        if self.deployer is None:
            return
        handle = self.handle(task)
        try:
            for _ in range(MAX_OUTPUT_BATCHES):
                out = await self.deployer.read_output(handle, final=final)
                if not out.lines:
                    return
                await self.store.append_logs(
                    [
                        LogLineRecord(job_id=task.job_id, task_id=task.id, stream=s, line=text)
                        for s, text in out.lines
                    ]
                )
                await self.deployer.ack_output(handle, out)
        except Exception as exc:
            log.warning("task.output_not_shipped", task_id=task.id, error=str(exc))

    async def halt(self, tasks: Sequence[TaskRecord], reason: str) -> None:
        """Stop every live task and mark it terminated. A task whose stop cannot be sent now
        stays live (the error is raised after the others were handled) and is retried."""
        delayed: TemporaryError | None = None
        for task in tasks:
            if task.state not in LIVE_TASK_STATES:
                continue
            try:
                if task.data_consumer:
                    if task.state != "pending":  # a pending task was never announced
                        await self.notify(task, "stop", reason)
                elif self.deployer is not None and task.state != "pending":
                    await self.deployer.stop(self.handle(task))
                    await self.ship_output(task, final=True)
            except TemporaryError as exc:
                delayed = delayed or exc
                continue
            await self.set_task(task, "terminated", reason)
        if delayed is not None:
            raise delayed
