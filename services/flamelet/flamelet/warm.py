"""Warm runners: task processes started before their task, so that a task skips start-up.

Every task used to pay for a new interpreter and the SDK's imports (half a second of CPU, more
with torch) after it was assigned, ten times over when ten trainers share a machine. A warm
runner is that process started ahead (``python -m flame.warm``, :mod:`flame.warm`), under
``flamelet.supervise`` and in the very sandbox the task will have: its own fresh work dir, the
one dataset it may read, the node's limits and clean environment. When a task for that dataset
comes, the agent unpacks the task into the runner's work dir and writes the order (the task's
command and environment) to the runner's stdin; the runner then is the task's process.

Nothing is shared between tasks: a runner serves one task and is never reused, and it is only
handed a task whose sandbox would have been the same (same dataset, the node's own Python).
The pool keeps at most one idle runner per dataset (and one for tasks without a dataset),
``size`` in all, each for at most ``idle_seconds``; it starts one for a dataset when the agent
starts (for the datasets registered then) and again whenever a task of that dataset ends.
A runner whose agent goes away reads the end of its input and exits without running anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog

from flame_service.sandbox import Sandbox
from flame_spec.warm import failed_unused, order_line
from flamelet import runner

log = structlog.get_logger(__name__)

WORKDIR_PREFIX = "warm-"


@dataclass(frozen=True)
class WarmRunner:
    dataset: str | None  # the dataset folder its sandbox shows (read-only), if any
    workdir: Path
    started: runner.Started
    since: float  # monotonic time it was started

    @property
    def ended(self) -> bool:
        return self.started.process.returncode is not None


class WarmPool:
    def __init__(
        self,
        tasks_dir: Path,
        python: str,
        limits: runner.Limits,
        *,
        size: int,
        imports: Sequence[str] = (),
        idle_seconds: float = 900.0,
    ) -> None:
        self.tasks_dir = tasks_dir
        self.python = python
        self.limits = limits
        self.size = size
        self.imports = list(imports)
        self.idle_seconds = idle_seconds
        self._idle: dict[str | None, WarmRunner] = {}
        self._filling: set[str | None] = set()
        self.broken = False  # a runner died unused: this node's Python cannot run them
        self.handed = 0  # tasks that ran in a warm runner (observability, tests)

    def idle(self) -> list[WarmRunner]:
        return list(self._idle.values())

    async def fill(self, dataset: str | None, sandbox: Sandbox) -> None:
        """Have an idle runner ready for tasks of ``dataset`` (``None``: tasks without one)."""
        if self.size <= 0 or self.broken or dataset in self._idle or dataset in self._filling:
            return
        self._filling.add(dataset)
        try:
            while len(self._idle) >= self.size:  # make room: the longest idle goes
                oldest = min(self._idle.values(), key=lambda r: r.since)
                await self.discard(self._idle.pop(oldest.dataset))
            workdir = self.tasks_dir / f"{WORKDIR_PREFIX}{uuid.uuid4().hex[:16]}"
            workdir.mkdir(parents=True, mode=0o700)
            visible = [dataset] if dataset is not None else []
            cmd = sandbox.wrap([self.python, "-m", "flame.warm", *self.imports], workdir, visible)
            try:
                started = await runner.spawn(
                    cmd, workdir, runner.clean_env(workdir), self.limits, asyncio.subprocess.PIPE
                )
            except OSError as exc:
                shutil.rmtree(workdir, ignore_errors=True)
                log.warning("warm.start_failed", error=str(exc))
                return
            self._idle[dataset] = WarmRunner(dataset, workdir, started, time.monotonic())
            log.info("warm.ready", pid=started.pid, dataset=dataset)
        finally:
            self._filling.discard(dataset)

    async def take(self, dataset: str | None) -> WarmRunner | None:
        """The idle runner for ``dataset``, now the caller's, or ``None``."""
        r = self._idle.pop(dataset, None)
        if r is None:
            return None
        if r.ended:
            await self._died_unused(r)
            return None
        return r

    async def hand_over(self, r: WarmRunner, argv: list[str], env: dict[str, str]) -> None:
        """Give ``r`` its task: ``argv`` is the command after the interpreter. Raises
        :class:`OSError` (a broken pipe) when the runner is gone."""
        stdin = r.started.process.stdin
        assert stdin is not None
        stdin.write(order_line(argv, env))
        await stdin.drain()
        stdin.close()
        self.handed += 1

    async def discard(self, r: WarmRunner, *, keep_workdir: bool = False) -> None:
        """Kill a runner that will not be handed a task (its whole process group)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(r.started.pid, signal.SIGKILL)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(r.started.process.wait(), 10.0)
        if not keep_workdir:
            shutil.rmtree(r.workdir, ignore_errors=True)

    async def expire(self) -> None:
        """Let go of runners idle too long, and forget those that died."""
        now = time.monotonic()
        for dataset, r in list(self._idle.items()):
            if r.ended:
                del self._idle[dataset]
                await self._died_unused(r)
            elif now - r.since > self.idle_seconds:
                del self._idle[dataset]
                await self.discard(r)

    async def close(self) -> None:
        idle, self._idle = list(self._idle.values()), {}
        await asyncio.gather(*(self.discard(r) for r in idle))

    async def _died_unused(self, r: WarmRunner) -> None:
        """A runner ended before its order. Killed (by an operator, the OOM killer): start
        another later. Exited with an error of its own: this node's Python cannot run them
        (no SDK, say), so stop starting them and say why once."""
        code = runner.read_exit_code(r.workdir)
        try:
            stderr = (r.workdir / runner.STDERR_FILE).read_text(errors="replace")[-2000:]
        except OSError:
            stderr = ""
        shutil.rmtree(r.workdir, ignore_errors=True)
        if failed_unused(code):
            self.broken = True
            log.warning("warm.disabled", exit_code=code, stderr=stderr)


def stale_workdirs(tasks_dir: Path, in_use: set[Path]) -> list[Path]:
    """Work dirs of warm runners an earlier agent left that no task took (safe to remove)."""
    if not tasks_dir.is_dir():
        return []
    return [
        p
        for p in tasks_dir.iterdir()
        if p.name.startswith(WORKDIR_PREFIX) and p.resolve() not in in_use
    ]
