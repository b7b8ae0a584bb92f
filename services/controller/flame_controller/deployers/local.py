"""Local deployer: each task is a child process on the control-plane host.

Per task a work dir ``<data_dir>/tasks/<job id>/<task id>/``, prepared by
:func:`flame_service.taskdir.prepare_task_dir` (``code/``, ``config.json``, ``checkpoints/``,
``tmp/``), also holds::

    stdout.log stderr.log
    process.json     {"pid", "create_time", "start_id"} of the running process
    run.sh           runs the task command and writes exit_code when it ends

The handle it returns is a small JSON document: job id, task id, pid and the process's start.

The process is ``[python, *launch_args, "config.json"]`` (default ``python -m flame.launch``)
run through a tiny ``/bin/sh`` script (``run.sh``) that records the exit code in ``exit_code`` (so a
restarted controller, which cannot ``wait()`` for a child it did not start, still learns how the
task ended).  It gets a clean environment (PATH, HOME = work dir, LANG, TMPDIR, ``FLAME_*``) and
its own session (``start_new_session=True``), so a controller crash does not kill it.  ``stop``
sends SIGTERM to the process group, then SIGKILL after a grace period.  The whole of it runs in
a bubblewrap sandbox (:mod:`flame_service.sandbox`) that sees only the Python environment and
the task's own work dir: not the control plane's home, store, blobs or other tasks.

Once :meth:`LocalDeployer.prepare` ran (the reconciler calls it as it starts), a task's first
attempt runs in a warm runner when one is idle (:mod:`.warm`): the same ``run.sh``, sandbox and
environment, started ahead in ``tasks/.warm/<id>/`` with the SDK already imported; the task's
folder is then a link to the runner's.

A process is identified by pid *and* its start (boot id and start tick,
:mod:`flame_service.process_identity`; psutil's ``create_time`` for records made before), so a
reused pid is never mistaken for the task (nor killed), and a wall clock stepped while the
controller was down does not make a running task look gone.  ``start`` first looks at
``process.json``: when the task's process still runs it is adopted, not started again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import psutil
import structlog
from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from flame_service.errors import FailedPrecondition
from flame_service.files import write_atomic
from flame_service.process_identity import live_process, process_start_id
from flame_service.sandbox import Sandbox, SandboxMode, SandboxUnavailable, choose_sandbox
from flame_service.taskdir import prepare_task_dir
from flame_spec.privacy import NO_TELEMETRY

from .base import Launch, Observed, Output
from .processes import LocalHandle, ProcessId, describe, killpg, pid_free, signal_code, wait_gone
from .warm import RECORD, WarmRunner, WarmRunners
from .warm import discard as discard_runner

log = structlog.get_logger(__name__)

# run.sh: runs the task command, records its exit status in exit_code (atomically), passes it
# on.  A script file rather than ``sh -c``, so that only the task process itself shows the
# task command line (process listings count one process per task).
_RUN_SH = """#!/bin/sh
# written by the flame local deployer
rc=0
{command} || rc=$?
printf '%s' "$rc" > exit_code.tmp && mv exit_code.tmp exit_code
exit "$rc"
"""
STREAMS = ("stdout", "stderr")
_CREATE_TIME_TOLERANCE = 0.05  # seconds; only for records without a start_id


class LocalDeployerSettings(BaseSettings):
    """Env ``FLAME_LOCAL_DEPLOYER_*``."""

    model_config = SettingsConfigDict(env_prefix="FLAME_LOCAL_DEPLOYER_", extra="ignore")

    python: str = Field(default_factory=lambda: sys.executable)
    launch_args: list[str] = Field(default_factory=lambda: ["-m", "flame.launch"])
    stop_grace_seconds: float = Field(default=5.0, ge=0)
    env: dict[str, str] = Field(default_factory=dict)  # extra FLAME_* variables for every task
    max_output_chunk: int = Field(default=256 * 1024, ge=1024)  # bytes read per stream per pass
    max_line_chars: int = Field(default=8192, ge=80)
    # user code runs sandboxed (flame_service.sandbox); "none" only for development (env
    # FLAME_SANDBOX, shared with the flamelet)
    sandbox: SandboxMode = Field(
        default="auto", validation_alias=AliasChoices("FLAME_SANDBOX", "sandbox")
    )
    # processes started ahead of their task (flame_controller.deployers.warm), once prepare()
    # ran; 0: every task starts its own interpreter
    warm_runners: int = Field(default=1, ge=0, le=16)
    warm_imports: list[str] = Field(default_factory=list)  # modules they import besides the SDK


class LocalDeployer:
    """Runs tasks as local child processes (see the module docstring)."""

    name = "local"

    def __init__(self, data_dir: Path, settings: LocalDeployerSettings | None = None) -> None:
        self.root = Path(data_dir).expanduser() / "tasks"
        self.settings = settings or LocalDeployerSettings()
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._listener: Callable[[str], None] | None = None
        self._watched: set[str] = set()
        self._guard = threading.Lock()
        self._sandbox: Sandbox | None = None
        self._sandbox_lock = threading.Lock()
        self.warm = WarmRunners(self.root / ".warm", self.settings.warm_runners)

    def sandbox(self) -> Sandbox:
        """The sandbox tasks run in, chosen on first use (:class:`FailedPrecondition` when
        there is none and running unsandboxed was not asked for)."""
        with self._sandbox_lock:
            if self._sandbox is None:
                try:
                    self._sandbox = choose_sandbox(self.settings.sandbox, self.settings.python)
                except SandboxUnavailable as exc:
                    raise FailedPrecondition(str(exc)) from None
                log.info("deployer.sandbox", kind=self._sandbox.kind)
            return self._sandbox

    # -- exit notifications ------------------------------------------------------------------
    def set_listener(self, listener: Callable[[str], None] | None) -> None:
        """``listener(task_id)`` is called (from a watcher thread) when a task's process ends."""
        self._listener = listener

    def _watch(self, task_id: str, wait: Callable[[], object], *, refill: bool = False) -> None:
        """One daemon thread per running process, blocked in ``wait`` until it ends (then,
        with ``refill``, it starts the warm runner that replaces the one the task took)."""
        with self._guard:
            if task_id in self._watched:
                return
            self._watched.add(task_id)

        def run() -> None:
            try:
                wait()
            except Exception:  # a vanished process counts as ended
                log.debug("deployer.watch_ended", task_id=task_id)
            finally:
                with self._guard:
                    self._watched.discard(task_id)
                listener = self._listener
                if listener is not None:
                    with contextlib.suppress(RuntimeError):  # its event loop may be gone
                        listener(task_id)
                if refill:
                    self.fill_warm()

        threading.Thread(target=run, name=f"watch-{task_id}", daemon=True).start()

    def _watch_adopted(self, task_id: str, proc: psutil.Process) -> None:
        if task_id not in self._children:
            self._watch(task_id, proc.wait)

    # -- paths and identity ----------------------------------------------------------------
    def workdir(self, job_id: str, task_id: str) -> Path:
        return self.root / job_id / task_id

    def handle_for(self, job_id: str, task_id: str, attempt: int) -> str:
        """Without a process identity: observe, stop and output read ``process.json``."""
        del attempt  # one work dir per task; a new attempt replaces the previous process
        return LocalHandle(job_id, task_id, None).encode()

    def _recorded(self, job_id: str, task_id: str) -> ProcessId | None:
        """The process ``process.json`` names in the task's work dir."""
        try:
            data = json.loads((self.workdir(job_id, task_id) / RECORD).read_text())
            sid = data.get("start_id")
            start_id = str(sid) if sid else None
            return ProcessId(int(data["pid"]), float(data["create_time"]), start_id)
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _identity(self, h: LocalHandle) -> ProcessId | None:
        """The handle's process, else the one recorded in the work dir."""
        return h.ident or self._recorded(h.job_id, h.task_id)

    @staticmethod
    def _process(ident: ProcessId) -> psutil.Process | None:
        """The live process with this identity, or None (gone, zombie or a reused pid)."""
        return live_process(
            ident.pid, ident.create_time, ident.start_id, tolerance=_CREATE_TIME_TOLERANCE
        )

    def _lock(self, task_id: str) -> asyncio.Lock:
        return self._locks.setdefault(task_id, asyncio.Lock())

    # -- Deployer --------------------------------------------------------------------------
    async def start(self, launch: Launch) -> str:
        async with self._lock(launch.task_id):
            ident = self._recorded(launch.job_id, launch.task_id)
            proc = self._process(ident) if ident is not None else None
            if ident is not None and proc is not None:
                log.info("deployer.adopted", task_id=launch.task_id, pid=ident.pid)
                self._watch_adopted(launch.task_id, proc)
            else:
                ident = await asyncio.to_thread(self._start_sync, launch)
                log.info(
                    "deployer.started",
                    job_id=launch.job_id,
                    task_id=launch.task_id,
                    attempt=launch.attempt,
                    pid=ident.pid,
                )
            return LocalHandle(launch.job_id, launch.task_id, ident).encode()

    def _start_sync(self, launch: Launch) -> ProcessId:
        workdir = self.workdir(launch.job_id, launch.task_id)
        if not workdir.exists():  # a first attempt; a later one starts where the last ran
            runner = self.warm.take() if self._warm_usable() else None
            if runner is not None:
                ident = self._start_warm(runner, launch, workdir)
                if ident is not None:
                    return ident
        if workdir.is_symlink():  # a warm runner took the first attempt: run in its folder
            workdir = workdir.resolve()
        workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
        for stale_file in ("exit_code", "exit_code.tmp", RECORD, "run.sh"):
            (workdir / stale_file).unlink(missing_ok=True)
        config_path = prepare_task_dir(workdir, launch.code, launch.config, token=launch.credential)
        env = {**self._base_env(workdir), **self._task_env(launch, config_path)}
        argv = [self.settings.python, *self.settings.launch_args, "config.json"]
        child, ident = self._spawn(argv, workdir, env, stdin=subprocess.DEVNULL)
        self._children[launch.task_id] = child
        self._watch(launch.task_id, child.wait)
        self._record(workdir, ident)
        return ident

    def _base_env(self, workdir: Path) -> dict[str, str]:
        """A task's clean environment, but for what names its task."""
        return {
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
            "HOME": str(workdir),
            "LANG": os.environ.get("LANG", "C.UTF-8"),
            "TMPDIR": str(workdir / "tmp"),
            "PYTHONUNBUFFERED": "1",
            **{k: v for k, v in self.settings.env.items() if k.startswith("FLAME_")},
            **NO_TELEMETRY,
        }

    @staticmethod
    def _task_env(launch: Launch, config_path: Path) -> dict[str, str]:
        return {
            "FLAME_TASK_CONFIG": str(config_path),
            "FLAME_JOB_ID": launch.job_id,
            "FLAME_TASK_ID": launch.task_id,
        }

    def _spawn(
        self, argv: list[str], workdir: Path, env: dict[str, str], *, stdin: int
    ) -> tuple[subprocess.Popen[bytes], ProcessId]:
        """``argv`` through ``run.sh`` in the sandbox, in ``workdir``, in a session of its own."""
        sandbox = self.sandbox()
        write_atomic(workdir / "run.sh", _RUN_SH.format(command=shlex.join(argv)).encode())
        with (
            (workdir / "stdout.log").open("ab") as out,
            (workdir / "stderr.log").open("ab") as err,
        ):
            child = subprocess.Popen(
                sandbox.wrap(["/bin/sh", "run.sh"], workdir),
                cwd=workdir,
                env=env,
                stdin=stdin,
                stdout=out,
                stderr=err,
                start_new_session=True,
                close_fds=True,
            )
        try:
            create_time = psutil.Process(child.pid).create_time()
        except psutil.NoSuchProcess:  # exited at once (and reaped by nobody yet: unlikely)
            create_time = 0.0
        return child, ProcessId(child.pid, create_time, process_start_id(child.pid))

    @staticmethod
    def _record(workdir: Path, ident: ProcessId) -> None:
        record = {"pid": ident.pid, "create_time": ident.create_time, "start_id": ident.start_id}
        write_atomic(workdir / RECORD, json.dumps(record).encode())

    # -- warm runners ------------------------------------------------------------------------
    async def prepare(self) -> None:
        """Start the warm runners (in the background: this returns at once)."""
        if self._warm_usable():
            await asyncio.to_thread(self.warm.remove_stale)
            self._fill_in_background()

    def _warm_usable(self) -> bool:
        """Runners can run the task command (``-m MODULE`` or a script, not ``-c``)."""
        args = self.settings.launch_args
        return self.settings.warm_runners > 0 and bool(args) and args[0] != "-c"

    def _replace(self, runner: WarmRunner) -> None:
        """Let ``runner`` go (it will not run a task) and start another."""
        discard_runner(runner)
        self._fill_in_background()

    def _fill_in_background(self) -> None:
        threading.Thread(target=self.fill_warm, name="deployer-warm", daemon=True).start()

    def fill_warm(self) -> None:
        """Start runners until the pool is full (blocking; each start returns at once)."""
        try:
            self.sandbox()
        except FailedPrecondition:
            return  # tasks cannot start either; each start says why
        self.warm.fill(self._spawn_runner)

    def _spawn_runner(self, workdir: Path) -> WarmRunner:
        argv = [self.settings.python, "-m", "flame.warm", *self.settings.warm_imports]
        child, ident = self._spawn(argv, workdir, self._base_env(workdir), stdin=subprocess.PIPE)
        return WarmRunner(workdir, child, ident)

    def _start_warm(self, runner: WarmRunner, launch: Launch, workdir: Path) -> ProcessId | None:
        """Hand ``launch`` to ``runner``: unpack it into the runner's folder, record the runner
        as the task's process and link the task's folder to it, then write the order (so a
        controller that dies in between adopts the task). None when the runner died: the
        caller starts the task cold."""
        try:
            config_path = prepare_task_dir(
                runner.workdir, launch.code, launch.config, token=launch.credential
            )
        except BaseException:  # an unsafe bundle: nothing ran; the runner is let go
            self._replace(runner)
            raise
        self._record(runner.workdir, runner.ident)
        workdir.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        workdir.symlink_to(runner.workdir, target_is_directory=True)
        argv = [*self.settings.launch_args, "config.json"]
        try:
            self.warm.hand_over(runner, argv, self._task_env(launch, config_path))
        except OSError as exc:
            log.warning("deployer.warm_gone", task_id=launch.task_id, error=str(exc))
            workdir.unlink()
            self._replace(runner)
            return None
        self._children[launch.task_id] = runner.child
        self._watch(launch.task_id, runner.child.wait, refill=True)
        return runner.ident

    async def observe(self, handle: str) -> Observed:
        h = LocalHandle.decode(handle)
        child = self._children.get(h.task_id)
        ident = self._identity(h)
        if child is not None and (ident is None or child.pid == ident.pid):
            code = child.poll()
            if code is None:
                return Observed("running")
            detail = describe(code, self.workdir(h.job_id, h.task_id))
            return Observed("exited", exit_code=signal_code(code), detail=detail)
        if ident is not None and self._process(ident) is not None:
            return Observed("running")
        recorded = self._exit_code(h)
        if recorded is not None:
            detail = describe(recorded, self.workdir(h.job_id, h.task_id))
            return Observed("exited", exit_code=recorded, detail=detail)
        if ident is None:
            return Observed("missing", detail="no process recorded for this task")
        return Observed("missing", detail=f"process {ident.pid} is gone without an exit status")

    def _exit_code(self, h: LocalHandle) -> int | None:
        try:
            return int((self.workdir(h.job_id, h.task_id) / "exit_code").read_text().strip())
        except (OSError, ValueError):
            return None

    async def adopt(self, handle: str) -> bool:
        h = LocalHandle.decode(handle)
        ident = self._identity(h)
        proc = self._process(ident) if ident is not None else None
        if proc is not None:
            self._watch_adopted(h.task_id, proc)
        running = (await self.observe(handle)).state == "running"
        log.info("deployer.adopt", task_id=h.task_id, running=running)
        return running

    async def stop(self, handle: str) -> None:
        h = LocalHandle.decode(handle)
        async with self._lock(h.task_id):
            await asyncio.to_thread(self._stop_sync, h)

    def _stop_sync(self, h: LocalHandle) -> None:
        ident = self._identity(h)
        child = self._children.pop(h.task_id, None)
        if ident is None:
            return
        leader = self._process(ident)
        if leader is None:
            if child is not None:
                child.poll()
            # the leader is gone; its group may still hold children.  The pid cannot have been
            # reused as a new group id while that group exists, so signalling it is safe.
            if pid_free(ident.pid):
                killpg(ident.pid, signal.SIGKILL)
            return
        try:
            procs = [leader, *leader.children(recursive=True)]
        except psutil.NoSuchProcess:
            procs = [leader]
        killpg(ident.pid, signal.SIGTERM)
        alive = wait_gone(procs, self.settings.stop_grace_seconds)
        if alive:
            log.warning("deployer.kill", task_id=h.task_id, pids=[p.pid for p in alive])
            killpg(ident.pid, signal.SIGKILL)
            for proc in alive:
                with contextlib.suppress(psutil.NoSuchProcess):
                    proc.kill()
            wait_gone(alive, 5.0)
        if child is not None:
            child.poll()
        log.info("deployer.stopped", task_id=h.task_id, pid=ident.pid)

    # -- output ------------------------------------------------------------------------------
    async def read_output(self, handle: str, *, final: bool = False) -> Output:
        h = LocalHandle.decode(handle)
        return await asyncio.to_thread(self._read_output_sync, h, final)

    def _read_output_sync(self, h: LocalHandle, final: bool) -> Output:
        workdir = self.workdir(h.job_id, h.task_id)
        position = self._shipped(workdir)
        lines: list[tuple[str, str]] = []
        for stream in STREAMS:
            path = workdir / f"{stream}.log"
            start = position.get(stream, 0)
            try:
                with path.open("rb") as f:
                    f.seek(start)
                    data = f.read(self.settings.max_output_chunk)
            except OSError:
                continue
            if not final or len(data) == self.settings.max_output_chunk:
                cut = data.rfind(b"\n") + 1  # complete lines only
                if cut == 0 and len(data) == self.settings.max_output_chunk:
                    cut = len(data)  # one overlong line: ship it in pieces
                data = data[:cut]
            if not data:
                continue
            position[stream] = start + len(data)
            for raw in data.splitlines():
                text = raw.decode("utf-8", errors="replace")[: self.settings.max_line_chars]
                lines.append((stream, text))
        return Output(lines=lines, position=position)

    async def ack_output(self, handle: str, output: Output) -> None:
        h = LocalHandle.decode(handle)
        data = json.dumps(output.position).encode()
        path = self.workdir(h.job_id, h.task_id) / "shipped.json"
        await asyncio.to_thread(write_atomic, path, data)

    @staticmethod
    def _shipped(workdir: Path) -> dict[str, int]:
        try:
            raw = json.loads((workdir / "shipped.json").read_text())
            return {k: int(v) for k, v in raw.items() if k in STREAMS}
        except (OSError, ValueError, AttributeError):
            return {}

    async def release(self, job_id: str) -> None:
        """Nothing to free: work dirs stay for inspection (``flamectl logs`` reads the store)."""
        del job_id

    async def close(self) -> None:
        await asyncio.to_thread(self.warm.close)
        for child in self._children.values():
            child.poll()  # reap what has ended; running tasks keep running
        self._children.clear()
