"""The node agent: reconcile assigned tasks, run them once, ship logs, report status.

Plain asyncio logic over an injected REST client (:class:`flamelet.api.AgentApi`) and event
source (:class:`flamelet.events.EventSource`). Level-triggered: every (re)connect to the
notifier, every event and a periodic resync read the task list and take the next step; the
ledger (written before each step) keeps a task attempt from ever running twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import re
import shutil
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import structlog
from pydantic import ValidationError

from flame_service.errors import FlameServiceError
from flame_service.pyenv import EnvError, ensure_env
from flame_service.sandbox import Sandbox, SandboxUnavailable, choose_sandbox
from flame_service.taskdir import describe_exit, failure_line, prepare_task_dir
from flame_spec import SpecError, TaskConfig
from flame_spec.requirements import FILE_NAME as REQUIREMENTS_FILE
from flame_spec.requirements import parse_requirements
from flame_spec.retry import Backoff
from flamelet import runner, warm
from flamelet.api import AgentApi, LogLine, TaskInfo
from flamelet.errors import (
    AlreadyRunning,
    ApiError,
    BundleRejected,
    FlameletError,
    Unauthorized,
    Unavailable,
)
from flamelet.events import CONNECTED, STOP, EventSource
from flamelet.health import HealthProbe, HealthSample
from flamelet.home import DatasetRegistry, Identity
from flamelet.ledger import Entry, Ledger, Phase
from flamelet.settings import DEFAULT_COMMAND, FlameletSettings

log = structlog.get_logger(__name__)

ACTIVE_STATES = ("scheduled", "running")
_SAFE_ID = re.compile(r"[^A-Za-z0-9_.-]")
_ROLE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,62}[a-z0-9])?$")
_READ_CHUNK = 1024 * 1024
MARK_ATTEMPT = 10**12  # a log line's mark: attempt * MARK_ATTEMPT + where it ends in its file


def shown(dataset_path: str | None) -> str | None:
    """The dataset folder a task's sandbox shows (read-only): the path, if it exists."""
    return dataset_path if dataset_path and Path(dataset_path).exists() else None


@dataclass(frozen=True)
class Fetched:
    """A task's verified bundle and config, and where its dataset is on this node."""

    task_id: str
    role: str
    code: bytes
    config: TaskConfig
    dataset_uri: str | None
    visible_dataset: str | None  # shown(dataset_uri)


@dataclass(frozen=True)
class Prepared:
    cmd: list[str]  # the whole command, sandbox included
    env: dict[str, str]
    order: list[str] | None  # the command after the interpreter, when a warm runner can run it


class Agent:
    def __init__(
        self,
        identity: Identity,
        api: AgentApi,
        events: EventSource,
        settings: FlameletSettings,
    ) -> None:
        self.identity = identity
        self.settings = settings
        self.home = settings.home
        self.ledger = Ledger(self.home)
        self.datasets = DatasetRegistry(self.home)
        self._api = api
        self._events = events
        self._limits = runner.Limits(
            settings.max_open_files, settings.cpu_seconds, settings.address_space_bytes
        )
        self._procs: dict[str, asyncio.subprocess.Process] = {}
        self._sandbox_chosen: Sandbox | None = None
        self._stop_notes: dict[str, str] = {}
        self._stops_in_flight: set[str] = set()
        self._handing: set[str] = set()  # attempts whose process is being swapped (warm -> cold)
        self.warm = warm.WarmPool(
            self.home / "tasks",
            settings.python,
            self._limits,
            size=settings.warm_runners,
            imports=settings.warm_imports,
            idle_seconds=settings.warm_idle_seconds,
        )
        self._warm_kind: dict[str, str | None] = {}  # attempt -> the dataset its runner shows
        # the node's command starts with its Python: a warm runner can run it
        self._warmable = settings.command[:1] == DEFAULT_COMMAND[:1]
        self._background: set[asyncio.Task[None]] = set()
        self._kick = asyncio.Event()
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._lock_file: IO[str] | None = None
        self.reconciled = 0  # completed reconcile passes (observability, tests)
        self.connected = False  # holds a notifier subscription (observability)
        self.last_health: HealthSample | None = None
        self.health_reports = 0  # samples the control plane accepted
        self.health_failures = 0

    # ---- life cycle
    def stop(self) -> None:
        """Ask :meth:`run` to return; running tasks keep running and are re-adopted later."""
        self._stopping.set()

    async def run(self) -> None:
        """Run until :meth:`stop`; raises Unauthorized when the credential is refused."""
        self._lock()
        structlog.contextvars.bind_contextvars(node_id=self.identity.node_id)
        try:
            self._recover()
            for dataset in list(self.datasets.all().values())[: self.settings.warm_runners]:
                self._spawn(self._refill_warm(shown(dataset.path)))
            loops = [
                asyncio.create_task(self._event_loop(), name="events"),
                asyncio.create_task(self._reconcile_loop(), name="reconcile"),
                asyncio.create_task(self._housekeeping_loop(), name="housekeeping"),
            ]
            health = asyncio.create_task(self._health_loop(), name="health")
            stopping = asyncio.create_task(self._stopping.wait())
            done, _ = await asyncio.wait([*loops, stopping], return_when=asyncio.FIRST_COMPLETED)
            loops[0].cancel()  # the event stream only ends when cancelled
            if stopping in done:
                # Let a pass that is under way finish (a status report in flight gets recorded).
                await asyncio.wait(loops[1:], timeout=5.0)
            for t in [*loops, health, stopping, *self._background]:
                t.cancel()
            await asyncio.gather(
                *loops, health, stopping, *self._background, return_exceptions=True
            )
            await self.warm.close()
            for t in done:
                if t is not stopping and not t.cancelled() and t.exception() is not None:
                    exc = t.exception()
                    assert exc is not None
                    raise exc
        finally:
            self._unlock()
            log.info("agent.stopped")

    def _lock(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True, mode=0o700)
        f = (self.home / "flamelet.lock").open("w")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            f.close()
            raise AlreadyRunning(f"another flamelet is running with home {self.home}") from exc
        self._lock_file = f

    def _unlock(self) -> None:
        if self._lock_file is not None:
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            self._lock_file.close()
            self._lock_file = None

    def _recover(self) -> None:
        """After a restart: never restart a half-started attempt; re-adopt running ones."""
        for e in self.ledger.entries():
            if e.phase == Phase.STARTING:
                self.ledger.put(
                    e.with_(
                        phase=Phase.DONE,
                        outcome="failed",
                        reason="the flamelet restarted while starting this task; not started again",
                    )
                )
                log.warning("task.abandoned", task_id=e.task_id, attempt=e.attempt)
            elif (
                e.phase == Phase.RUNNING
                and e.pid is not None
                and runner.alive(e.pid, e.create_time, e.start_id)
            ):
                log.info("task.adopted", task_id=e.task_id, attempt=e.attempt, pid=e.pid)
                if e.stop_requested:
                    self._spawn_stop(e, "stop requested before the flamelet restarted")
        in_use = {Path(e.workdir).resolve() for e in self.ledger.entries() if e.workdir}
        for folder in warm.stale_workdirs(self.home / "tasks", in_use):
            shutil.rmtree(folder, ignore_errors=True)

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _pause(self, seconds: float, event: asyncio.Event | None = None) -> None:
        """Wait ``seconds`` (backoff / poll period), returning early on ``event`` or stop."""
        waiters = [asyncio.ensure_future(self._stopping.wait())]
        if event is not None:
            waiters.append(asyncio.ensure_future(event.wait()))
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()

    # ---- notifier events
    def _backoff(self) -> Backoff:
        return Backoff(self.settings.backoff_initial, self.settings.backoff_max)

    async def _event_loop(self) -> None:
        backoff = self._backoff()
        while not self._stopping.is_set():
            try:
                async for ev in self._events.subscribe(self.ledger.event_seq):
                    if ev.kind == CONNECTED:
                        self.connected = True
                        log.info("notifier.connected", after_seq=self.ledger.event_seq)
                        backoff.reset()
                        self._kick.set()
                        if self.ledger.event_seq:  # clears what an earlier failed ack left queued
                            await self._ack(self.ledger.event_seq)
                        continue
                    await self._handle_event(ev.seq, ev.kind, ev.task_id)
                log.info("notifier.stream_ended")
            except Unauthorized as exc:
                log.error("credential.refused", source="notifier", error=str(exc))
                raise
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("notifier.unavailable", error=str(exc))
            finally:
                self.connected = False
            await self._pause(backoff.next())

    async def _health_loop(self) -> None:
        """Measure the node and report it; a failed report is only logged (the next one may
        get through, and the other loops deal with a refused credential)."""
        probe = HealthProbe(self.home)
        interval = self.settings.health_interval
        # CPU use is measured between two readings: give the first one a second's interval
        await self._pause(min(1.0, interval or 1.0))
        while not self._stopping.is_set():
            try:
                self.last_health = await probe.sample()
                if interval is not None:
                    await self._api.report_health(self.last_health)
                    self.health_reports += 1
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.health_failures += 1
                log.warning("health.report_failed", error=str(exc))
            await self._pause(interval or 15.0)

    def task_phases(self) -> dict[str, int]:
        """Ledger entries by phase (``done`` counts finished tasks still kept)."""
        counts = dict.fromkeys((p.value for p in Phase), 0)
        for e in self.ledger.entries():
            counts[e.phase.value] += 1
        return counts

    async def _handle_event(self, seq: int, kind: str, task_id: str) -> None:
        if seq > self.ledger.event_seq:
            log.info("event.received", seq=seq, kind=kind, task_id=task_id)
            if kind == STOP:
                for e in self.ledger.for_task(task_id):
                    if e.phase == Phase.RUNNING and not e.stop_requested:
                        self._spawn_stop(e, "STOP_TASK from the control plane")
            self._kick.set()  # START / UPDATE / STOP: reconcile against the task list
            self.ledger.handled_event(seq)
        await self._ack(seq)

    async def _ack(self, seq: int) -> None:
        try:
            await self._events.ack(seq)
        except Unauthorized:
            raise
        except Exception as exc:  # the event comes again; handling it twice is harmless
            log.warning("event.ack_failed", seq=seq, error=str(exc))

    # ---- reconciliation
    async def _reconcile_loop(self) -> None:
        backoff = self._backoff()
        while not self._stopping.is_set():
            self._kick.clear()
            try:
                await self.reconcile()
                backoff.reset()
                wait = self.settings.resync_interval
            except Unauthorized as exc:
                log.error("credential.refused", source="apiserver", error=str(exc))
                raise
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                wait = backoff.next()
                log.warning("reconcile.failed", error=str(exc), retry_in=round(wait, 3))
            await self._pause(wait, self._kick)

    async def reconcile(self) -> None:
        """One level-triggered pass over the tasks assigned to this node."""
        tasks = await self._api.list_tasks()
        by_id = {t.id: t for t in tasks}
        for t in tasks:
            if t.node_id and t.node_id != self.identity.node_id:
                log.warning("task.foreign", task_id=t.id, node=t.node_id)
                continue
            if t.state == "scheduled" and self.ledger.get(t.id, t.attempt) is None:
                await self._start(t)
        for e in self.ledger.entries():
            if e.phase != Phase.RUNNING or e.stop_requested:
                continue
            cur = by_id.get(e.task_id)
            if cur is None or cur.attempt != e.attempt or cur.state not in ACTIVE_STATES:
                state = "gone" if cur is None else f"{cur.state} (attempt {cur.attempt})"
                self._spawn_stop(e, f"the task is {state} on the control plane")
        self.reconciled += 1

    def _workdir(self, task: TaskInfo) -> Path:
        return self.home / "tasks" / f"{_SAFE_ID.sub('_', task.id)}-{task.attempt}"

    async def _start(self, task: TaskInfo) -> None:
        bound = structlog.contextvars.bound_contextvars(task_id=task.id, job_id=task.job_id)
        with bound:
            workdir = self._workdir(task)
            entry = self.ledger.put(
                Entry(
                    task_id=task.id, attempt=task.attempt, job_id=task.job_id, workdir=str(workdir)
                )
            )
            ready: warm.WarmRunner | None = None
            try:
                fetched = await self._fetch(task)
                ready = await self.warm.take(fetched.visible_dataset) if self._warmable else None
                if ready is not None:  # the task's work dir is the one its runner sees
                    workdir = ready.workdir
                    entry = self.ledger.put(entry.with_(workdir=str(workdir)))
                else:
                    shutil.rmtree(workdir, ignore_errors=True)  # a fresh folder every attempt
                prepared = await self._prepare(fetched, workdir)
            except (Unavailable, Unauthorized):
                # Nothing started: forget the attempt so the next pass tries again.
                self.ledger.remove(entry.key)
                if ready is not None:
                    await self.warm.discard(ready)
                shutil.rmtree(workdir, ignore_errors=True)
                raise
            except Exception as exc:
                if ready is not None:  # nothing ran: nothing of the runner is left either
                    await self.warm.discard(ready)
                if isinstance(exc, BundleRejected | ApiError | FlameletError):
                    await self._refuse(entry, str(exc))
                else:  # malformed answers, disk errors: never leave it half-done
                    log.exception("task.prepare_failed", task_id=task.id)
                    await self._refuse(entry, f"{type(exc).__name__}: {exc}")
                return
            try:
                started = await self._launch(entry, prepared, ready)
            except OSError as exc:
                await self._refuse(entry, f"cannot start the task process: {exc}")
                return
            if prepared.order is not None:  # this kind of task can run warm: keep one ready
                self._warm_kind[entry.key] = fetched.visible_dataset
            self._procs[entry.key] = started.process
            self._spawn(self._await_exit(started.process))
            log.info(
                "task.started",
                attempt=task.attempt,
                pid=started.pid,
                cmd=prepared.cmd,
                warm=ready is not None and prepared.order is not None,
            )
            self._wake.set()

    async def _launch(
        self, entry: Entry, prepared: Prepared, ready: warm.WarmRunner | None
    ) -> runner.Started:
        """Run the prepared task: in its warm runner when it has one (the ledger records the
        runner's pid before the order goes out), else in a new process."""
        workdir = Path(entry.workdir)
        self._handing.add(entry.key)
        try:
            if ready is not None and prepared.order is not None:
                self._record_running(entry, ready.started)
                try:
                    await self.warm.hand_over(ready, prepared.order, prepared.env)
                    return ready.started
                except OSError as exc:  # it died since it was taken: start the task cold
                    log.warning("warm.lost", task_id=entry.task_id, error=str(exc))
            if ready is not None:
                await self.warm.discard(ready, keep_workdir=True)
                (workdir / runner.EXIT_FILE).unlink(missing_ok=True)
            started = await runner.spawn(prepared.cmd, workdir, prepared.env, self._limits)
            self._record_running(entry, started)
            return started
        finally:
            self._handing.discard(entry.key)

    def _record_running(self, entry: Entry, started: runner.Started) -> None:
        self.ledger.put(
            entry.with_(
                phase=Phase.RUNNING,
                pid=started.pid,
                create_time=started.create_time,
                start_id=started.start_id,
            )
        )

    async def _refill_warm(self, dataset: str | None) -> None:
        try:
            await self.warm.fill(dataset, await self._sandbox())
        except Exception as exc:  # never fatal: tasks then start cold
            log.warning("warm.fill_failed", error=str(exc))

    async def _refuse(self, entry: Entry, reason: str) -> None:
        log.error("task.refused", task_id=entry.task_id, attempt=entry.attempt, reason=reason)
        self.ledger.put(
            entry.with_(phase=Phase.DONE, outcome="failed", reason=f"refused by the node: {reason}")
        )
        with contextlib.suppress(Exception):
            line = LogLine(entry.task_id, "agent", f"task refused: {reason}", datetime.now(UTC))
            await self._api.append_logs([line])
        self._wake.set()

    async def _fetch(self, task: TaskInfo) -> Fetched:
        """Fetch and verify the task's bundle and config. Nothing is written."""
        meta = await self._api.get_task(task.id)
        if meta.task.node_id and meta.task.node_id != self.identity.node_id:
            raise BundleRejected(f"the task belongs to node {meta.task.node_id}")
        role = meta.task.role or str(meta.config.get("role", ""))
        if not _ROLE.match(role):
            raise BundleRejected(f"invalid role name {role!r}")
        code = await self._api.get_code(task.id)
        if len(code) > self.settings.max_bundle_bytes:
            raise BundleRejected(f"code bundle is {len(code)} bytes, above the node's limit")
        digest = hashlib.sha256(code).hexdigest()
        if not meta.code_sha256 or digest != meta.code_sha256.lower():
            raise BundleRejected(
                f"code sha256 mismatch: expected {meta.code_sha256 or '(none)'}, got {digest}"
            )
        try:
            config = TaskConfig.model_validate(meta.config, strict=False)
        except ValidationError as exc:
            raise BundleRejected(
                f"invalid task config: {SpecError.of('task config', exc)}"
            ) from None
        dataset_uri = self._dataset_path(config)
        return Fetched(task.id, role, code, config, dataset_uri, shown(dataset_uri))

    async def _prepare(self, fetched: Fetched, workdir: Path) -> Prepared:
        """Unpack the bundle into ``workdir``; write config.json. Nothing runs on failure."""
        try:
            config_path = prepare_task_dir(
                workdir,
                fetched.code,
                fetched.config,
                token=self.identity.credential,
                dataset_uri=fetched.dataset_uri,
                max_bytes=self.settings.max_bundle_bytes,
            )
        except FlameServiceError as exc:
            raise BundleRejected(f"unsafe code bundle: {exc.message}") from exc
        python = await self._python_for(workdir / "code" / fetched.role)
        values = {
            "python": python,
            "config": str(config_path),
            "role": fetched.role,
            "workdir": str(workdir),
            "task_id": fetched.task_id,
        }
        cmd = [part.format(**values) for part in self.settings.command]
        env = runner.clean_env(workdir, {"FLAME_TASK_CONFIG": str(config_path)})
        visible = [fetched.visible_dataset] if fetched.visible_dataset else []
        if python != self.settings.python:  # the role's cached environment, read-only
            visible.append(str(Path(python).parent.parent))
        # a warm runner is the node's own Python: it can run the command after the interpreter
        order = cmd[1:] if self._warmable and python == self.settings.python else None
        return Prepared((await self._sandbox()).wrap(cmd, workdir, visible), env, order)

    async def _sandbox(self) -> Sandbox:
        if self._sandbox_chosen is None:
            try:
                self._sandbox_chosen = await asyncio.to_thread(
                    choose_sandbox, self.settings.sandbox, self.settings.python
                )
            except SandboxUnavailable as exc:
                raise FlameletError(str(exc)) from None
            log.info("flamelet.sandbox", kind=self._sandbox_chosen.kind)
        return self._sandbox_chosen

    async def _python_for(self, role_code: Path) -> str:
        """The interpreter the role runs with: the node's own, or, when the role's code has a
        ``requirements.txt``, a cached environment with those packages installed as wheels
        (``flame_service.pyenv``)."""
        path = role_code / REQUIREMENTS_FILE
        if not path.is_file() or path.is_symlink():
            return self.settings.python
        try:
            text = path.read_text()
            requirements = parse_requirements(text, f"{role_code.name}/{REQUIREMENTS_FILE}")
        except (SpecError, UnicodeDecodeError) as exc:
            raise BundleRejected(str(exc)) from exc
        if not requirements:
            return self.settings.python
        try:
            return await ensure_env(self.home / "envs", requirements, self.settings.python)
        except EnvError as exc:
            raise BundleRejected(exc.message) from exc

    def _dataset_path(self, config: TaskConfig) -> str | None:
        """Where the task's dataset is on this node (the path never leaves the node)."""
        if config.dataset is None:
            return None
        wanted = config.dataset.name
        local = self.datasets.get(wanted) or self.datasets.find(config.dataset.id)
        if local is None:
            raise BundleRejected(
                f"dataset {wanted!r} is not registered on this node (flamelet dataset add)"
            )
        return local.path

    # ---- stopping
    def _spawn_stop(self, entry: Entry, why: str) -> None:
        entry = self.ledger.update(entry.key, stop_requested=True)
        log.info("task.stopping", task_id=entry.task_id, attempt=entry.attempt, why=why)
        self._stop_notes[entry.key] = why
        self._stops_in_flight.add(entry.key)
        self._spawn(self._stop(entry, why))

    async def _stop(self, entry: Entry, why: str) -> None:
        assert entry.pid is not None
        try:
            note = await runner.stop_group(
                entry.pid, entry.create_time, entry.start_id, self.settings.stop_grace
            )
            self._stop_notes[entry.key] = f"{why}; {note}"
        finally:
            self._stops_in_flight.discard(entry.key)
        log.info("task.stopped", task_id=entry.task_id, attempt=entry.attempt, how=note)
        self._wake.set()

    async def _await_exit(self, proc: asyncio.subprocess.Process) -> None:
        await proc.wait()
        self._wake.set()

    # ---- exits, logs, status
    async def _housekeeping_loop(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()
            for e in self.ledger.entries():
                if e.settled:
                    continue
                try:
                    await self._tend(e)
                except Unauthorized as exc:
                    log.error("credential.refused", source="apiserver", error=str(exc))
                    raise
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("task.tend_failed", task_id=e.task_id, error=str(exc))
            self._prune()
            await self.warm.expire()
            await self._pause(self.settings.poll_interval, self._wake)

    def _prune(self) -> None:
        """Remove the work dirs, then the ledger entries, of the finished tasks beyond
        ``keep_finished_tasks`` (a crash in between only leaves an entry to prune again)."""
        old = self.ledger.beyond(self.settings.keep_finished_tasks)
        if not old:
            return
        tasks_dir = (self.home / "tasks").resolve()
        for e in old:
            workdir = Path(e.workdir).resolve() if e.workdir else None
            if workdir is not None and workdir.is_relative_to(tasks_dir):
                shutil.rmtree(workdir, ignore_errors=True)
        self.ledger.forget([e.key for e in old])
        log.info("tasks.pruned", count=len(old), kept=self.settings.keep_finished_tasks)

    async def _tend(self, e: Entry) -> None:
        e = self.ledger.get(e.task_id, e.attempt) or e
        if e.phase == Phase.RUNNING:
            e = self._check_exit(e)
        if not e.logs_done:
            e = await self._ship_logs(e)
        if e.phase == Phase.RUNNING or (e.pid is not None and not e.reported):
            want = "running"  # also before the outcome of a task that ended quickly
        elif e.phase == Phase.DONE and e.logs_done:
            want = e.outcome  # final status after the last log lines
        else:
            return
        if e.reported == want:
            return
        reason = f"pid {e.pid} on node {self.identity.node_id}" if want == "running" else e.reason
        try:
            await self._api.report_status(e.task_id, want, reason, e.attempt)
            log.info("status.reported", task_id=e.task_id, state=want, reason=reason)
        except (Unavailable, Unauthorized):
            raise
        except ApiError as exc:
            log.warning("status.rejected", task_id=e.task_id, state=want, error=str(exc))
        e = self.ledger.update(e.key, reported=want)
        if e.phase == Phase.DONE and want == "running":
            await self._tend(e)

    def _check_exit(self, e: Entry) -> Entry:
        e = self.ledger.get(e.task_id, e.attempt) or e
        if e.key in self._stops_in_flight or e.key in self._handing:
            return e  # the outcome is decided when the stop (or the start) has finished
        proc = self._procs.get(e.key)
        if proc is not None:
            if proc.returncode is None:
                return e
        elif e.pid is not None and runner.alive(e.pid, e.create_time, e.start_id):
            return e
        self._procs.pop(e.key, None)
        code = runner.read_exit_code(Path(e.workdir))
        if e.stop_requested:
            note = self._stop_notes.get(e.key, "stop requested")
            outcome, reason = "failed", f"terminated: {note}"
            if code is not None:
                reason += f" ({describe_exit(code)})"
        elif code is None:
            outcome, reason = "failed", "the task process ended without an exit status"
        elif code == 0:
            outcome, reason = "completed", "exit code 0"
        else:
            outcome, reason = "failed", describe_exit(code)
            why = failure_line(Path(e.workdir))
            if why:
                reason += f": {why}"
        log.info("task.exited", task_id=e.task_id, attempt=e.attempt, outcome=outcome, why=reason)
        if e.key in self._warm_kind:  # the next task like it finds a runner ready
            self._spawn(self._refill_warm(self._warm_kind.pop(e.key)))
        return self.ledger.update(e.key, phase=Phase.DONE, outcome=outcome, reason=reason)

    async def _ship_logs(self, e: Entry) -> Entry:
        workdir = Path(e.workdir)
        final = e.phase == Phase.DONE
        for _ in range(100):  # bounded work per tick
            lines: list[LogLine] = []
            offsets = dict(e.log_offsets)
            remaining = False
            now = datetime.now(UTC)
            for stream, name in (("stdout", runner.STDOUT_FILE), ("stderr", runner.STDERR_FILE)):
                new_lines, offsets[stream], more = self._read_lines(
                    workdir / name, offsets.get(stream, 0), final, len(lines)
                )
                # the mark lets the control plane store a line resent after a lost answer once
                lines += [
                    LogLine(e.task_id, stream, text, now, mark=e.attempt * MARK_ATTEMPT + end)
                    for text, end in new_lines
                ]
                remaining = remaining or more
            if lines:
                try:
                    await self._api.append_logs(lines)
                except Unauthorized:
                    raise
                except ApiError as exc:  # e.g. the task no longer exists: retrying is pointless
                    log.warning("logs.rejected", task_id=e.task_id, error=str(exc))
                    return self.ledger.update(e.key, logs_done=True)
            if offsets != e.log_offsets:
                e = self.ledger.update(e.key, log_offsets=offsets)
            if not remaining:
                break
        else:
            return e
        if final and not remaining:
            e = self.ledger.update(e.key, logs_done=True)
        return e

    def _read_lines(
        self, path: Path, offset: int, final: bool, already: int
    ) -> tuple[list[tuple[str, int]], int, bool]:
        """Complete lines of ``path`` after ``offset`` (a trailing partial line only when
        ``final``) with the offset where each ends; returns them, the new offset and whether
        more is waiting."""
        room = self.settings.log_batch_lines - already
        try:
            with path.open("rb") as f:
                f.seek(offset)
                data = f.read(_READ_CHUNK)
                at_eof = not f.read(1)
        except FileNotFoundError:
            return [], offset, False
        out: list[tuple[str, int]] = []
        consumed = 0
        for raw in data.splitlines(keepends=True):
            if len(out) >= room:
                return out, offset + consumed, True
            complete = raw.endswith((b"\n", b"\r"))  # progress bars end lines with \r
            if not complete and not final and len(raw) < self.settings.log_line_max:
                break
            consumed += len(raw)
            text = raw.rstrip(b"\r\n").decode("utf-8", "replace")
            out.append((text[: self.settings.log_line_max], offset + consumed))
        return out, offset + consumed, not at_eof
