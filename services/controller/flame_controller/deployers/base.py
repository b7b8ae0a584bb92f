"""The ``Deployer`` interface: start, observe and stop the tasks the control plane runs itself.

Data-consumer tasks run on their dataset's node (the flamelet starts them); every other task
(aggregators, coordinators) is run by a deployer: ``local`` (child processes on the control-plane
host) or ``kubernetes`` (one Job per task attempt).

Contract (``tests/contract/test_deployers.py`` runs it against every deployer), so that a task
never runs twice and a restarted controller takes over:

* ``start`` returns an opaque **handle** (a process identity on the local deployer, a Job name
  on Kubernetes) that the reconciler stores on the task; ``observe``, ``stop``, ``adopt`` and the
  output calls take only the handle, so a new controller process can carry on from the store.
* ``release(job_id)`` frees what a finished job's tasks left (the reconciler calls it once
  the job is terminal and none of its tasks is live).
* ``start`` is idempotent per task attempt: when that attempt already runs (the controller
  crashed after starting it, before storing the handle) it returns its handle instead of
  starting another one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

from flame_spec import TaskConfig


@dataclass(frozen=True)
class Launch:
    """Everything a deployer needs to start one attempt of a task."""

    job_id: str
    task_id: str
    role: str
    attempt: int
    config: TaskConfig  # as the job builder made it; the deployer localizes it where it runs
    code: bytes  # the job's code zip (its sha256 was checked by the reconciler)
    credential: str  # the task's credential for the control plane

    def __repr__(self) -> str:  # never print the credential
        return f"Launch(job_id={self.job_id!r}, task_id={self.task_id!r}, attempt={self.attempt})"


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

    async def prepare(self) -> None:
        """Get ready to start tasks (the reconciler calls it as it starts; it returns at once):
        the local deployer starts its warm runners."""
        ...

    async def start(self, launch: Launch) -> str:
        """Run one attempt of a task; returns its handle. Idempotent per task attempt."""
        ...

    def handle_for(self, job_id: str, task_id: str, attempt: int) -> str:
        """The handle an attempt gets, known before it starts: what a restarted controller
        uses when it crashed between starting a task and storing its handle."""
        ...

    async def observe(self, handle: str) -> Observed:
        """The task's process as it is now."""
        ...

    async def stop(self, handle: str) -> None:
        """Stop the task (graceful, then forced); no error when it is not running."""
        ...

    async def adopt(self, handle: str) -> bool:
        """After a controller restart: re-attach to the task if it still runs (True)."""
        ...

    async def read_output(self, handle: str, *, final: bool = False) -> Output:
        """Output lines not yet acknowledged (``final``: include an unterminated last line)."""
        ...

    async def ack_output(self, handle: str, output: Output) -> None:
        """Mark ``output`` as shipped (persisted, so a restarted controller does not resend)."""
        ...

    async def release(self, job_id: str) -> None:
        """The job has ended and none of its tasks runs: free what its tasks left behind
        (Kubernetes: delete the job's objects). Raises OSError when worth retrying."""
        ...

    def set_listener(self, listener: Callable[[str], None] | None) -> None:
        """Have ``listener(task_id)`` called (from any thread) when a task's process ends, so
        the reconciler reacts at once instead of on its fallback timer."""
        ...

    async def close(self) -> None:
        """Release resources; running tasks keep running."""
        ...
