"""The job reconciler: drives every job from its stored state towards its desired state.

Level-triggered and idempotent (STYLE §3): a pass reads each job and its tasks from the store,
takes the next step, writes it with compare-and-set (a lost race just means "look again"), and
says when it wants to look again.  Nothing is trusted from memory, so a restarted controller
simply runs another pass: deadlines are stored (``deadline``, ``next_check_at``), deployer-run
processes are found again by their recorded pid, and a task is never started twice.

Steps, per job:

* desired ``running``: ``ready → starting`` (stamps ``started_at`` and the ``deadline`` =
  ``spec.max_run_time`` later) ``→ deploying`` (the code version must exist) — then every task:
  data-consumer tasks ``pending → scheduled`` on their dataset's node followed by a
  ``START_TASK`` event through the notifier (retried on later passes until the notifier takes
  it; the flamelet also reconciles from ``ListAssignedTasks``, so events are only hints); other
  tasks ``pending → scheduled → running`` through the deployer, whose processes are then
  observed (exit 0 → ``completed``, otherwise ``failed``).  ``deploying → running`` once no task
  waits to be started.
* A data-consumer task whose node is deleted, revoked, or offline (presence reported by the
  notifier) for longer than ``node_grace`` fails with that reason; a shorter absence (a
  flamelet restart) is waited out.
* ``running → completed`` when every role has a completed task and none is live.
* ``→ failed`` when a deployer-run task fails, when the live data-consumer tasks drop below
  ``spec.min_trainers``, when every task ended without each role completing, or on a permanent
  error (e.g. the code version is gone); the reason is stored.  Live tasks are then stopped.
* desired ``stopped`` (or the deadline passed): ``→ stopping`` → ``STOP_TASK`` to the nodes and
  ``deployer.stop`` for the rest, tasks ``terminated`` → job ``terminated`` (a job stopped
  before it started goes straight to ``terminated``).

Wake-ups are event-driven: the domain layer calls :meth:`Reconciler.kick` after a start, a stop
or a task status report; a fallback timer (``interval``, 1 s) covers deadlines and retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any

import structlog

from flame_service.errors import Conflict, FlameServiceError, NotFound

from ..deployers.base import Deployer
from ..store.base import Store
from ..store.records import (
    JOB_TERMINAL_STATES,
    JobRecord,
    JobState,
    LogLineRecord,
    NodeRecord,
    TaskRecord,
    TaskState,
    utcnow,
)
from .notifier_client import GrpcNotifier, Notifier, NotifierUnavailable
from .states import LIVE_TASK_STATES, job_transition, task_transition

log = structlog.get_logger(__name__)

CredentialIssuer = Callable[[str], Awaitable[str]]  # job id -> secret for its deployed tasks
CredentialRevoker = Callable[[str], Awaitable[int]]  # job id -> how many were revoked
MAX_STEPS_PER_JOB = 100


class TemporaryError(Exception):
    """Retrying later may help (the notifier is down, a deployer hiccup)."""

    def __init__(self, message: str, delay: float = 1.0) -> None:
        super().__init__(message)
        self.delay = delay


class PermanentError(Exception):
    """Retrying cannot help: the job fails with this reason."""


class Reconciler:
    """Drives jobs; start with ``task = asyncio.create_task(r.run())``, end with ``r.stop()``.

    ``notifier`` is an address (``host:port``), a :class:`Notifier`, or None (no node events:
    nodes then learn of their tasks only from ``ListAssignedTasks``).  ``issue_credential``
    makes the per-job credential handed to deployer-run tasks (default: the domain's
    ``issue_task_credential``).
    """

    def __init__(
        self,
        store: Store,
        deployer: Deployer | None,
        notifier_address: str | Notifier | None,
        *,
        interval: float = 1.0,
        retry_delay: float = 1.0,
        concurrency: int = 8,
        node_grace: float = 10.0,
        issue_credential: CredentialIssuer | None = None,
        revoke_credentials: CredentialRevoker | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.store = store
        self.deployer = deployer
        if isinstance(notifier_address, str):
            self.notifier: Notifier | None = GrpcNotifier(notifier_address)
        else:
            self.notifier = notifier_address
        self.interval = interval
        self.retry_delay = retry_delay
        self.node_grace = node_grace
        self._hints: dict[str, float] = {}  # job id -> look again within (this pass only)
        self.clock = clock
        self._issue_credential = issue_credential or self._domain_credential
        self._revoke_credentials = revoke_credentials or self._domain_revoke
        self._sem = asyncio.Semaphore(concurrency)
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.passes = 0

    # -- life cycle ------------------------------------------------------------------------
    def kick(self, job_id: str | None = None) -> None:
        """Wake the loop now (after a start, a stop or a task status report)."""
        del job_id  # every pass looks at every job that needs it
        self._wake.set()

    async def run(self) -> None:
        self._task = asyncio.current_task()
        self._stopping = False
        self._loop = asyncio.get_running_loop()
        if self.deployer is not None:
            self.deployer.set_listener(self._process_ended)
        log.info("reconciler.started", deployer=getattr(self.deployer, "name", None))
        try:
            await self._adopt_running()
        except Exception:
            log.exception("reconciler.adopt_failed")
        while not self._stopping:
            self._wake.clear()
            try:
                delay = await self.reconcile_once()
            except Exception:
                log.exception("reconciler.pass_failed")
                delay = self.interval
            if self._stopping:
                break
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=delay)
        log.info("reconciler.stopped")

    def _process_ended(self, task_id: str) -> None:
        """A deployer-run process ended (called from a watcher thread): look now."""
        del task_id
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    async def stop(self) -> None:
        """End the loop (running tasks keep running) and close the notifier channel."""
        self._stopping = True
        self._wake.set()
        task, self._task = self._task, None
        if task is not None and task is not asyncio.current_task():
            with contextlib.suppress(asyncio.CancelledError):
                try:
                    await asyncio.wait_for(asyncio.shield(task), timeout=10)
                except TimeoutError:
                    task.cancel()
                    await task
        if self.notifier is not None:
            await self.notifier.close()
        if self.deployer is not None:
            self.deployer.set_listener(None)
            await self.deployer.close()

    async def _adopt_running(self) -> None:
        if self.deployer is None:
            return
        for job in await self.store.jobs_to_reconcile(self.clock()):
            for task in await self.store.list_tasks(job_id=job.id, states=["running"]):
                if not task.data_consumer:
                    await self.deployer.adopt(task)

    # -- passes ----------------------------------------------------------------------------
    async def reconcile_once(self) -> float:
        """One pass over every job that needs attention; returns seconds until the next one."""
        now = self.clock()
        jobs = await self.store.jobs_to_reconcile(now)
        self.passes += 1
        # a job created but never started needs nothing (its start or stop kicks us)
        todo = [j for j in jobs if not (j.state == "ready" and j.desired_state == "ready")]
        delays = await asyncio.gather(*(self._guarded(job.id) for job in todo))
        return min([self.interval, *delays])

    def _until_due(self, job: JobRecord) -> float:
        """Seconds until the job's stored deadline or check time (at most ``interval``)."""
        delay = self.interval
        if not job.terminal:
            now = self.clock()
            for at in (job.next_check_at, job.deadline):
                if at is not None:
                    delay = min(delay, max(0.0, (at - now).total_seconds()))
        return delay

    async def _guarded(self, job_id: str) -> float:
        async with self._sem:
            try:
                return await self.reconcile_job(job_id)
            except Exception:
                log.exception("reconciler.job_failed", job_id=job_id)
                return self.retry_delay

    async def reconcile_job(self, job_id: str) -> float:
        """Take steps on one job until it needs to wait; returns the requeue delay."""
        with structlog.contextvars.bound_contextvars(job_id=job_id):
            for _ in range(MAX_STEPS_PER_JOB):
                self._hints.pop(job_id, None)
                try:
                    job = await self.store.get_job(job_id)
                except NotFound:
                    return self.interval  # deleted meanwhile
                tasks = await self.store.list_tasks(job_id=job_id)
                try:
                    progressed = await self._step(job, tasks)
                except Conflict:
                    continue  # someone else wrote first: re-read and look again
                except TemporaryError as exc:
                    log.warning("reconciler.retry_later", reason=str(exc), delay=exc.delay)
                    hint = self._hints.pop(job_id, exc.delay)
                    return min(exc.delay, self._until_due(job), hint)
                except PermanentError as exc:
                    await self._fail(job, str(exc))
                    continue
                if not progressed:
                    return min(self._until_due(job), self._hints.pop(job_id, self.interval))
            return 0.0

    # -- one step ----------------------------------------------------------------------------
    async def _step(self, job: JobRecord, tasks: list[TaskRecord]) -> bool:
        """Take the next step for ``job``; True when something was written."""
        now = self.clock()
        if job.terminal:
            return await self._cleanup(job, tasks)
        if job.state == "stopping":
            await self._halt(tasks, "job stopped")
            await self._set_job(job, "terminated", job.reason or "stopped")
            return True
        if job.desired_state == "stopped":
            if job.state == "ready":
                await self._halt(tasks, "job stopped before it started")
                await self._set_job(job, "terminated", job.reason or "stopped before it started")
            else:
                await self._set_job(job, "stopping", job.reason or "stop requested")
            return True
        if job.desired_state != "running":
            return False  # created, not started
        if job.state == "ready":
            await self._set_job(job, "starting", "start requested", now=now)
            return True
        if job.deadline is not None and now >= job.deadline:
            limit = job.spec.get("max_run_time", "?")
            await self._set_job(job, "stopping", f"max_run_time of {limit}s exceeded")
            return True
        if job.state == "starting":
            await self._code(job)  # fail early when the code version is gone or tampered with
            await self._check_nodes(tasks)
            await self._set_job(job, "deploying", f"deploying {len(tasks)} tasks")
            return True
        # deploying or running
        if await self._drive_tasks(job, tasks):
            return True
        verdict = self._judge(job, tasks)
        if verdict is not None:
            state, reason = verdict
            if state == "failed":
                await self._fail(job, reason)
            else:
                await self._set_job(job, state, reason)
            return True
        return False

    def _judge(self, job: JobRecord, tasks: Sequence[TaskRecord]) -> tuple[JobState, str] | None:
        """The job's next state from its tasks' states, if it changes."""
        for t in tasks:
            if not t.data_consumer and t.state == "failed":
                return "failed", f"task {t.id} ({t.role}) failed: {t.reason or 'no reason'}"
        consumers = [t for t in tasks if t.data_consumer]
        alive = sum(1 for t in consumers if t.state not in ("failed", "terminated"))
        min_trainers = int(job.spec.get("min_trainers", 1))
        if consumers and alive < min_trainers:
            role = consumers[0].role
            lost = "; ".join(
                f"{t.id}: {t.reason or t.state}"
                for t in consumers
                if t.state in ("failed", "terminated")
            )
            return "failed", (
                f"only {alive} of {len(consumers)} {role} tasks are left; "
                f"min_trainers is {min_trainers} ({lost[:500]})"
            )
        live = [t for t in tasks if t.state in LIVE_TASK_STATES]
        if job.state == "deploying" and not any(t.state in ("pending", "scheduled") for t in tasks):
            return "running", "every task is running"
        if job.state == "running" and not live:
            roles = {t.role for t in tasks}
            done = {t.role for t in tasks if t.state == "completed"}
            if roles <= done:
                return "completed", "every role completed"
            missing = ", ".join(sorted(roles - done))
            return "failed", f"every task ended but no {missing} task completed"
        return None

    async def _drive_tasks(self, job: JobRecord, tasks: Sequence[TaskRecord]) -> bool:
        """Start what is pending, tell nodes, observe deployer-run processes.  A temporary
        failure on one task does not hold up the others; it is raised after them."""
        progressed = False
        delayed: TemporaryError | None = None
        nodes: dict[str, NodeRecord | None] = {}  # read once per step
        for task in tasks:
            try:
                if task.data_consumer:
                    progressed |= await self._drive_node_task(job, task, nodes)
                else:
                    progressed |= await self._drive_deployer_task(job, task)
            except TemporaryError as exc:
                delayed = delayed or exc
        if delayed is not None and not progressed:
            raise delayed
        return progressed

    async def _drive_node_task(
        self, job: JobRecord, task: TaskRecord, nodes: dict[str, NodeRecord | None]
    ) -> bool:
        if task.state == "pending":
            if not task.node_id:
                raise PermanentError(f"task {task.id} consumes data but has no node")
            await self._set_task(
                task,
                "scheduled",
                f"assigned to node {task.node_id}",
                info={**task.info, "notified": False},
                attempt=task.attempt + 1,
            )
            return True
        if task.state in ("scheduled", "running") and task.node_id:
            lost = await self._node_lost(job, task.node_id, nodes)
            if lost:
                await self._set_task(task, "failed", lost)
                return True
        if task.state == "scheduled" and not task.info.get("notified"):
            await self._notify(task, "start", f"start task {task.id}")
            await self.store.cas_task(
                task.id, task.version, {"info": {**task.info, "notified": True}}
            )
            return True
        return False

    async def _node_lost(
        self, job: JobRecord, node_id: str, nodes: dict[str, NodeRecord | None]
    ) -> str | None:
        """Why the tasks on ``node_id`` are lost (deleted, revoked, offline past the grace
        period), or None.  A node that went offline less than ``node_grace`` ago (a flamelet
        restart) is given time: the job is looked at again when the grace ends."""
        if node_id not in nodes:
            try:
                nodes[node_id] = await self.store.get_node(node_id)
            except NotFound:
                nodes[node_id] = None
        node = nodes[node_id]
        if node is None:
            return f"node {node_id} no longer exists"
        if node.revoked:
            return f"node {node_id} was revoked"
        if node.presence != "offline":
            return None
        if node.last_seen is None:
            return f"node {node_id} is offline"
        gone_for = (self.clock() - node.last_seen).total_seconds()
        if gone_for >= self.node_grace:
            return f"node {node_id} offline since {node.last_seen.isoformat()}"
        wait = self.node_grace - gone_for
        self._hints[job.id] = min(self._hints.get(job.id, wait), wait)
        return None

    async def _drive_deployer_task(self, job: JobRecord, task: TaskRecord) -> bool:
        if task.state == "pending":
            if self.deployer is None:
                raise PermanentError(f"no deployer configured to run role {task.role!r}")
            await self._set_task(
                task, "scheduled", f"deploying with {self.deployer.name}", attempt=task.attempt + 1
            )
            return True
        if self.deployer is None:
            return False
        if task.state == "scheduled":
            code = await self._code(job)
            credential = await self._issue_credential(job.id)
            try:
                dep = await self.deployer.start(task, dict(task.config), code, credential)
            except FlameServiceError as exc:
                raise PermanentError(f"cannot start task {task.id}: {exc.message}") from exc
            except OSError as exc:
                raise TemporaryError(f"cannot start task {task.id}: {exc}") from exc
            await self._set_task(
                task,
                "running",
                f"started by {self.deployer.name} (pid {dep.pid})",
                pid=dep.pid,
                info={**task.info, "deployer": dep.info},
            )
            return True
        if task.state == "running":
            seen = await self.deployer.observe(task)
            await self._ship_output(task, final=seen.state != "running")
            if seen.state == "running":
                return False
            if seen.state == "exited" and seen.exit_code == 0:
                await self._set_task(task, "completed", "exit code 0")
            else:
                await self._set_task(task, "failed", seen.detail or "process ended")
            return True
        return False

    # -- stopping ----------------------------------------------------------------------------
    async def _halt(self, tasks: Sequence[TaskRecord], reason: str) -> None:
        """Stop every live task and mark it terminated.  A task whose stop cannot be sent now
        stays live (the error is raised after the others were handled) and is retried."""
        delayed: TemporaryError | None = None
        for task in tasks:
            if task.state not in LIVE_TASK_STATES:
                continue
            try:
                if task.data_consumer:
                    if task.state != "pending":  # a pending task was never announced
                        await self._notify(task, "stop", reason)
                elif self.deployer is not None and task.state != "pending":
                    await self.deployer.stop(task)
                    await self._ship_output(task, final=True)
            except TemporaryError as exc:
                delayed = delayed or exc
                continue
            await self._set_task(task, "terminated", reason)
        if delayed is not None:
            raise delayed

    async def _cleanup(self, job: JobRecord, tasks: Sequence[TaskRecord]) -> bool:
        """A terminal job: stop leftovers, then stop asking to be looked at."""
        live = [t for t in tasks if t.state in LIVE_TASK_STATES]
        if live:
            await self._halt(live, f"job {job.state}")
            return True
        if job.next_check_at is not None:
            # the job's tasks are gone: their control-plane credentials go too
            revoked = await self._revoke_credentials(job.id)
            await self.store.cas_job(job.id, job.version, {"next_check_at": None})
            log.info("job.finished", job_id=job.id, state=job.state, credentials_revoked=revoked)
            return True
        return False

    async def _fail(self, job: JobRecord, reason: str) -> None:
        """Fail the job; its live tasks are stopped by the following cleanup steps."""
        if job.terminal:
            return
        await self._set_job(job, "failed", reason)
        log.warning("job.failed", job_id=job.id, reason=reason)

    # -- writes and collaborators ------------------------------------------------------------
    async def _set_job(
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

    async def _set_task(
        self, task: TaskRecord, to: TaskState, reason: str, **extra: Any
    ) -> TaskRecord:
        transition = task_transition(task, to, reason, now=self.clock())
        changes = {**transition.changes, **extra}
        updated = await self.store.cas_task(task.id, task.version, changes, transition.record)
        log.info("task.transition", job_id=task.job_id, task_id=task.id, to=to, reason=reason)
        return updated

    async def _notify(self, task: TaskRecord, kind: str, reason: str) -> None:
        if self.notifier is None or not task.node_id:
            return
        try:
            await self.notifier.notify(
                task.node_id,
                "start" if kind == "start" else "stop",
                job_id=task.job_id,
                task_id=task.id,
                payload={"reason": reason, "role": task.role, "attempt": task.attempt},
            )
        except NotifierUnavailable as exc:
            raise TemporaryError(str(exc), delay=self.retry_delay) from exc

    async def _ship_output(self, task: TaskRecord, *, final: bool) -> None:
        """Copy new output lines of a deployer-run task into the store (at least once: a crash
        between the append and the ack resends those lines).  Never holds up the job."""
        if self.deployer is None:
            return
        try:
            for _ in range(64):
                out = await self.deployer.read_output(task, final=final)
                if not out.lines:
                    return
                await self.store.append_logs(
                    [
                        LogLineRecord(job_id=task.job_id, task_id=task.id, stream=s, line=text)
                        for s, text in out.lines
                    ]
                )
                await self.deployer.ack_output(task, out)
        except Exception as exc:
            log.warning("task.output_not_shipped", task_id=task.id, error=str(exc))

    async def _code(self, job: JobRecord) -> bytes:
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

    async def _check_nodes(self, tasks: Sequence[TaskRecord]) -> None:
        """Every node the job's data-consumer tasks need must still exist and not be revoked."""
        first_task_on: dict[str, TaskRecord] = {}
        for t in tasks:
            if t.node_id:
                first_task_on.setdefault(t.node_id, t)
        for task in first_task_on.values():
            assert task.node_id is not None
            try:
                node = await self.store.get_node(task.node_id)
            except NotFound:
                raise PermanentError(
                    f"task {task.id} needs node {task.node_id} (dataset {task.dataset_id}), "
                    "which no longer exists"
                ) from None
            if node.revoked:
                raise PermanentError(
                    f"task {task.id} needs node {task.node_id} (dataset {task.dataset_id}), "
                    "whose credential is revoked"
                )

    async def _domain_credential(self, job_id: str) -> str:
        from ..domain.context import Ctx
        from ..domain.tokens import issue_task_credential

        return await issue_task_credential(Ctx(store=self.store), job_id)

    async def _domain_revoke(self, job_id: str) -> int:
        from ..domain.context import Ctx
        from ..domain.tokens import revoke_all

        return await revoke_all(Ctx(store=self.store), subject=job_id, kind="task")
