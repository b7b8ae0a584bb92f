"""The job reconciler's loop: drives every job from its stored state towards its desired state.

Level-triggered and idempotent (STYLE §3): a pass reads each job and its tasks from the store,
asks :mod:`.decisions` for the next step, carries it out through :mod:`.effects` (compare-and-set
writes: a lost race just means "look again") and says when it wants to look again. Nothing is
trusted from memory, so a restarted controller simply runs another pass: deadlines are stored
(``deadline``, ``next_check_at``), deployer-run tasks are found again by their stored handle,
and a task attempt is never started twice.

Steps, per job:

* desired ``running``: ``ready → starting`` (stamps ``started_at`` and the ``deadline`` =
  ``spec.max_run_time`` later) ``→ deploying`` (the code version must exist and pass its
  sha256 check, the nodes must exist) — then every task: data-consumer tasks ``pending →
  scheduled`` on their dataset's node followed by a ``START_TASK`` event through the notifier
  (retried on later passes until the notifier takes it; the flamelet also reconciles from
  ``ListAssignedTasks``, so events are only hints); other tasks ``pending → scheduled →
  running`` through the deployer, whose processes are then observed (exit 0 → ``completed``).
  A deployer-run process that died otherwise is started again in the same task folder (so an
  aggregator resumes from its checkpoint): ``running → scheduled`` with the next ``attempt``,
  after a backoff stored as ``info.restart_at``, each restart a transition whose reason names
  the exit; after ``restarts.max_restarts`` of them in a row without the job reporting a new
  metric step in between (any task's: a middle aggregator reports none itself), or on an exit
  code no restart can change (configuration error, quorum lost), the task is ``failed``.
  ``deploying → running`` once no task waits to be started.
* A data-consumer task whose node is deleted or revoked fails with that reason. A node that is
  merely offline (its agent is down: its tasks may well run on) fails nothing by itself: the
  job fails when a task is known dead or its aggregator lost quorum, and the agent reports its
  tasks' real outcome when it reconnects. Only when nothing else of the job is live are tasks
  on nodes offline for longer than ``node_grace`` given up (``terminated``), so the job ends.
* ``running → completed`` when every role has a completed task and none is live; ``→ failed``
  as :func:`.decisions.judge` says, or on a permanent error. Live tasks are then stopped.
* desired ``stopped`` (or the deadline passed): ``→ stopping`` → ``STOP_TASK`` to the nodes and
  ``deployer.stop`` for the rest, tasks ``terminated`` → job ``terminated``.

Wake-ups are event-driven: the domain layer calls :meth:`Reconciler.kick` after a start, a stop
or a task status report, and the deployer when a process ends; a fallback timer (``interval``,
1 s) covers deadlines and retries.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta

import structlog

from flame_service.errors import Conflict, NotFound
from flame_spec.retry import backoff_delay

from ..deployers.base import Deployer
from ..store.base import Store
from ..store.records import JobRecord, TaskRecord, utcnow
from .decisions import (
    RESTART_AT,
    RESTART_STEP,
    RESTART_STREAK,
    NodeVerdict,
    RestartPolicy,
    after_exit,
    job_action,
    judge,
    node_verdict,
    outcome,
    restart_streak,
    restart_wait,
    written_off,
)
from .effects import Credentials, Effects, PermanentError, TemporaryError
from .notifier_client import GrpcNotifier, Notifier
from .states import GIVEN_UP, LIVE_TASK_STATES

log = structlog.get_logger(__name__)
MAX_STEPS_PER_JOB = 100
TRACKING_RETRY = (1.0, 30.0)  # backoff of a job's tracking set-up that failed (first, most)

__all__ = ["PermanentError", "Reconciler", "TemporaryError"]


class Reconciler:
    """Drives jobs; start with ``task = asyncio.create_task(r.run())``, end with ``r.stop()``.

    ``notifier`` is an address (``host:port``), a :class:`Notifier`, or None (no node events:
    nodes then learn of their tasks only from ``ListAssignedTasks``). ``credentials`` issues and
    revokes the per-job credentials of deployer-run tasks (the domain's token service).
    """

    def __init__(
        self,
        store: Store,
        deployer: Deployer | None,
        notifier: str | Notifier | None,
        *,
        credentials: Credentials,
        interval: float = 1.0,
        retry_delay: float = 1.0,
        concurrency: int = 8,
        node_grace: float = 10.0,
        restarts: RestartPolicy | None = None,
        clock: Callable[[], datetime] = utcnow,
        tracking: Callable[[JobRecord], Awaitable[None]] | None = None,
    ) -> None:
        self.store = store
        self.deployer = deployer
        if isinstance(notifier, str):
            notifier = GrpcNotifier(notifier)
        self.effects = Effects(store, deployer, notifier, credentials, clock, retry_delay)
        self.interval = interval
        self.retry_delay = retry_delay
        self.node_grace = node_grace
        self.restarts = restarts or RestartPolicy()
        self.clock = clock
        self._hints: dict[str, float] = {}  # job id -> look again within (this pass only)
        self._sem = asyncio.Semaphore(concurrency)
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.passes = 0
        # A running job's account, experiment and model on the tracking server, made beside
        # its deployment rather than before it (its aggregator waits for its account, not the
        # job for the tracking server). Kept per process: a restarted controller makes them
        # again for the jobs still running (every step of it is idempotent).
        self._tracking = tracking
        self._tracked: set[str] = set()
        self._tracking_calls: dict[str, asyncio.Task[None]] = {}
        self._tracking_failures: dict[str, int] = {}  # job id -> failed attempts in a row

    @property
    def notifier(self) -> Notifier | None:
        return self.effects.notifier

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
            try:
                await self.deployer.prepare()
            except Exception:  # tasks still start, only not ahead
                log.exception("reconciler.deployer_prepare_failed")
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
        for call in list(self._tracking_calls.values()):
            call.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await call
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
                    await self.deployer.adopt(self.effects.handle(task))

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
                    await self.effects.fail(job, str(exc))
                    continue
                if not progressed:
                    return min(self._until_due(job), self._hints.pop(job_id, self.interval))
            return 0.0

    # -- one step --------------------------------------------------------------------------
    def _ensure_tracking(self, job: JobRecord) -> None:
        """Set up ``job``'s tracking in the background, once per process, while it runs."""
        if job.terminal or job.desired_state != "running":
            self._tracked.discard(job.id)
            self._tracking_failures.pop(job.id, None)
            return
        if self._tracking is None or job.id in self._tracked or job.id in self._tracking_calls:
            return
        self._tracking_calls[job.id] = asyncio.create_task(self._set_up_tracking(job))

    async def _set_up_tracking(self, job: JobRecord) -> None:
        assert self._tracking is not None
        try:
            await self._tracking(job)
        except Exception as exc:  # the tracking server is down or refuses: try again later
            failures = self._tracking_failures.get(job.id, 0) + 1
            self._tracking_failures[job.id] = failures
            delay = backoff_delay(failures, *TRACKING_RETRY)
            log.warning("tracking.prepare_failed", job_id=job.id, error=str(exc), retry_in=delay)
            await asyncio.sleep(delay)
            self._wake.set()
        else:
            self._tracked.add(job.id)
            self._tracking_failures.pop(job.id, None)
        finally:
            self._tracking_calls.pop(job.id, None)

    async def _step(self, job: JobRecord, tasks: list[TaskRecord]) -> bool:
        """Take the next step for ``job``; True when something was written."""
        fx = self.effects
        self._ensure_tracking(job)
        now = self.clock()
        action = job_action(job, now)
        if action == "cleanup":
            live = [t for t in tasks if not t.terminal]
            if live:
                await fx.halt(live, f"job {job.state}")
                return True
            if job.next_check_at is not None:
                await fx.finished(job)
                return True
            return False
        if action == "terminate":
            before = job.state == "ready"
            await fx.halt(tasks, "job stopped before it started" if before else "job stopped")
            default = "stopped before it started" if before else "stopped"
            await fx.set_job(job, "terminated", job.reason or default)
        elif action == "request_stop":
            await fx.set_job(job, "stopping", job.reason or "stop requested")
        elif action == "wait":
            return False
        elif action == "start":
            await fx.set_job(job, "starting", "start requested", now=now)
        elif action == "timeout":
            limit = job.spec.get("max_run_time", "?")
            await fx.set_job(job, "stopping", f"max_run_time of {limit}s exceeded")
        elif action == "deploy":
            await fx.code(job)  # fail early when the code version is gone or tampered with
            await fx.check_nodes(tasks)
            await fx.set_job(job, "deploying", f"deploying {len(tasks)} tasks")
        else:  # drive
            if await self._drive_tasks(job, tasks):
                return True
            verdict = judge(job, tasks)
            if verdict is None:
                return False
            state, reason = verdict
            if state == "failed":
                await fx.fail(job, reason)
            else:
                await fx.set_job(job, state, reason)
        return True

    async def _drive_tasks(self, job: JobRecord, tasks: Sequence[TaskRecord]) -> bool:
        """Start what is pending, tell nodes, observe deployer-run processes. A temporary
        failure on one task does not hold up the others; it is raised after them."""
        progressed = False
        delayed: TemporaryError | None = None
        verdicts = await self._node_verdicts(tasks)
        away = {t.id for t in tasks if t.node_id in verdicts and verdicts[t.node_id].offline}
        for task in tasks:
            try:
                if task.data_consumer:
                    progressed |= await self._drive_node_task(job, task, tasks, verdicts, away)
                else:
                    progressed |= await self._drive_deployer_task(job, task)
            except TemporaryError as exc:
                delayed = delayed or exc
        if delayed is not None and not progressed:
            raise delayed
        return progressed

    async def _node_verdicts(self, tasks: Sequence[TaskRecord]) -> dict[str, NodeVerdict]:
        """What the nodes of the live tasks say (each node read once)."""
        out: dict[str, NodeVerdict] = {}
        now = self.clock()
        for t in tasks:
            if t.node_id and t.node_id not in out and t.state in LIVE_TASK_STATES:
                node = await self.effects.node(t.node_id)
                out[t.node_id] = node_verdict(t.node_id, node, now, self.node_grace)
        return out

    async def _drive_node_task(
        self,
        job: JobRecord,
        task: TaskRecord,
        tasks: Sequence[TaskRecord],
        verdicts: dict[str, NodeVerdict],
        away: set[str],
    ) -> bool:
        fx = self.effects
        if task.state == "pending":
            if not task.node_id:
                raise PermanentError(f"task {task.id} consumes data but has no node")
            await fx.set_task(
                task,
                "scheduled",
                f"assigned to node {task.node_id}",
                info={**task.info, "notified": False},
                attempt=task.attempt + 1,
            )
            return True
        if task.state in ("scheduled", "running") and task.node_id:
            verdict = verdicts[task.node_id]
            if verdict.look_again_in is not None:
                self._hint(job.id, verdict.look_again_in)
            if verdict.lost:
                await fx.set_task(task, "failed", verdict.lost)
                return True
            if verdict.offline and written_off(task, tasks, away):
                await fx.set_task(
                    task,
                    "terminated",
                    f"{verdict.offline}; the rest of the job ended without its report",
                    info={**task.info, GIVEN_UP: True},
                )
                return True
        if task.state == "scheduled" and not task.info.get("notified"):
            await fx.notify(task, "start", f"start task {task.id}")
            await self.store.cas_task(
                task.id, task.version, {"info": {**task.info, "notified": True}}
            )
            return True
        return False

    async def _drive_deployer_task(self, job: JobRecord, task: TaskRecord) -> bool:
        fx = self.effects
        if task.state == "pending":
            if self.deployer is None:
                raise PermanentError(f"no deployer configured to run role {task.role!r}")
            await fx.set_task(
                task, "scheduled", f"deploying with {self.deployer.name}", attempt=task.attempt + 1
            )
            return True
        if self.deployer is None:
            return False
        if task.state == "scheduled":
            wait = restart_wait(task, self.clock())
            if wait > 0:  # a restart's backoff: look again when it is over
                self._hint(job.id, wait)
                return False
            handle = await fx.deploy(job, task)
            await fx.set_task(
                task, "running", f"started by the {self.deployer.name} deployer", handle=handle
            )
            return True
        if task.state == "running":
            seen = await self.deployer.observe(fx.handle(task))
            if outcome(seen) is None:
                await fx.ship_output(task, final=False)
                return False
            await fx.ship_output(task, final=True)
            last_step = await self._job_step(task)
            streak = restart_streak(task, last_step)
            ended = after_exit(task, seen, self.restarts.max_restarts, streak)
            assert ended is not None
            state, reason = ended
            if state != "restart":
                await fx.set_task(task, state, reason)
                return True
            await self._restart(job, task, reason, streak, last_step)
            return True
        return False

    async def _job_step(self, task: TaskRecord) -> int | None:
        """The last metric step the task's job reported (its progress: a middle aggregator
        reports none itself, the top one does), None when none."""
        metrics = await self.store.read_metrics(task.job_id)
        return max((m.step for m in metrics), default=None)

    async def _restart(
        self, job: JobRecord, task: TaskRecord, reason: str, streak: int, last_step: int | None
    ) -> None:
        """Schedule the task's next attempt after a backoff; its old endpoint is forgotten so
        that its peers wait for the new one rather than retrying the dead one."""
        p = self.restarts
        delay = backoff_delay(streak + 1, p.backoff_initial, p.backoff_max)
        at = self.clock() + timedelta(seconds=delay)
        await self.effects.set_task(
            task,
            "scheduled",
            f"{reason}; next attempt in {delay:.2f}s",
            attempt=task.attempt + 1,
            handle=None,
            endpoint=None,
            info={
                **task.info,
                RESTART_AT: at.isoformat(),
                RESTART_STREAK: streak + 1,
                RESTART_STEP: last_step,
            },
        )
        log.warning("task.restart", task_id=task.id, attempt=task.attempt + 1, delay=delay)
        self._hint(job.id, delay)

    def _hint(self, job_id: str, wait: float) -> None:
        """Look at ``job_id`` again within ``wait`` seconds (this pass)."""
        self._hints[job_id] = min(self._hints.get(job_id, wait), wait)
