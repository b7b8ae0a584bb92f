"""The ``Deployer`` interface: start, observe and stop the tasks the control plane runs itself.

Data-consumer tasks run on their dataset's node (the flamelet starts them); every other task
(aggregators, coordinators) is run by a deployer: ``local`` (child processes on the control-plane
host) or ``kubernetes`` (one Job per task).

Contract, so that a task never runs twice:

* ``start`` is idempotent per task id: when the task's process already runs (e.g. the controller
  crashed after starting it but before recording it), it returns that deployment instead of
  starting another one.
* The store is the memory.  ``start`` returns a :class:`Deployment` whose ``pid`` and ``info``
  the reconciler writes into the task record; ``observe`` / ``stop`` / ``adopt`` work from the
  task record alone, so a new controller process can take over running tasks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from ..store.records import TaskRecord


@dataclass(frozen=True)
class Deployment:
    """Where a started task runs; ``info`` is stored in ``TaskRecord.info`` under ``deployer``."""

    task_id: str
    pid: int | None
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Observed:
    """What a deployer sees of a task.

    ``running``: alive; ``exited``: ended with ``exit_code`` (None when unknown);
    ``missing``: the deployer has no trace of it (never started, or vanished without a status).
    """

    state: Literal["running", "exited", "missing"]
    exit_code: int | None = None
    detail: str = ""


@dataclass(frozen=True)
class Output:
    """New complete output lines of a task, and the read position after them."""

    lines: list[tuple[str, str]]  # (stream "stdout" | "stderr", line without newline)
    position: dict[str, int] = field(default_factory=dict)


@runtime_checkable
class Deployer(Protocol):
    name: str

    async def start(
        self, task: TaskRecord, config: dict[str, Any], code: bytes, credential: str
    ) -> Deployment:
        """Run ``task`` with its config (a ``flame.config.TaskConfig`` dict), the code zip of the
        job's design and a credential for the control plane.  Idempotent per task id."""
        ...

    async def observe(self, task: TaskRecord) -> Observed:
        """The task's process as it is now."""
        ...

    async def is_running(self, task: TaskRecord) -> bool: ...

    async def stop(self, task: TaskRecord) -> None:
        """Stop the task (graceful, then forced); no error when it is not running."""
        ...

    async def adopt(self, task: TaskRecord) -> bool:
        """After a controller restart: re-attach to the task if it still runs (True)."""
        ...

    async def read_output(self, task: TaskRecord, *, final: bool = False) -> Output:
        """Output lines not yet acknowledged (``final``: include an unterminated last line)."""
        ...

    async def ack_output(self, task: TaskRecord, output: Output) -> None:
        """Mark ``output`` as shipped (persisted, so a restarted controller does not resend)."""
        ...

    def set_listener(self, listener: Callable[[str], None] | None) -> None:
        """Have ``listener(task_id)`` called (from any thread) when a task's process ends, so
        the reconciler reacts at once instead of on its fallback timer."""
        ...

    async def close(self) -> None:
        """Release resources; running tasks keep running."""
        ...
