"""The controller's storage interface: one async ``Store``, several backends.

Errors (all from :mod:`flame_service.errors`):

* ``AlreadyExists`` — create with a duplicate id, or a duplicate ``(owner, name)`` for
  projects, nodes, datasets, designs and jobs; a duplicate user ``name``, token ``token_hash``
  or code ``(design_id, version)``; an update that would create such a duplicate.
* ``NotFound`` — get / update / delete / compare-and-set of a record that does not exist.
* ``Conflict`` — a compare-and-set whose ``expected_version`` is no longer current.
* ``InvalidArgument`` — an update naming an unknown or immutable field, or a value of the
  wrong type; nothing is written.

Visibility filters on lists: ``owners`` and ``project_ids`` are OR-ed.  A record matches when
its ``owner`` is in ``owners`` or its ``project_id`` is in ``project_ids``; a filter that is
``None`` contributes nothing, and when both are ``None`` there is no visibility filter at all.
(``owners=[]`` and ``project_ids=None`` matches nothing.)  Other keyword filters are plain
equality filters AND-ed with the visibility filter; ``None`` means "any".

Pagination is keyset pagination in ``(created_at, id)`` order: pass the ``next_cursor`` of one
page as ``after`` to get the next one; ``next_cursor`` is ``None`` on the last page.  Records
created or deleted between pages never make another record appear twice or go missing.

Every update of a job or task bumps its ``version``; ``cas_job`` / ``cas_task`` apply changes
only if the version is still ``expected_version``, in one atomic single-document write.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, NamedTuple, Protocol, TypeVar, runtime_checkable

from flame_controller.store.records import (
    AuditRecord,
    CodeRecord,
    DatasetRecord,
    DesignRecord,
    IdempotencyRecord,
    InvitationRecord,
    JobRecord,
    LogLineRecord,
    MetricRecord,
    NodeHealthRecord,
    NodeRecord,
    ProjectRecord,
    TaskRecord,
    TokenRecord,
    TransitionRecord,
    UserRecord,
)

T = TypeVar("T")

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
DEFAULT_LOG_LIMIT = 1000


@dataclass(frozen=True)
class LogRetention:
    """How many log lines the store keeps: at most ``per_job`` of each job and ``total`` over
    all jobs (0 = no cap).  An append past a cap deletes the oldest lines (of that job, or of
    the whole store) and counts them, per job, in :meth:`Store.log_dropped`."""

    per_job: int = 0
    total: int = 0


class Page(NamedTuple, Generic[T]):
    """One page of a list: ``items, next_cursor = await store.list_jobs(...)``."""

    items: list[T]
    next_cursor: str | None


@runtime_checkable
class Store(Protocol):
    """Async persistence for every control-plane resource.  See the module doc for semantics."""

    # -- life cycle ------------------------------------------------------------------------
    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise ``flame_service.errors.Unavailable`` when the backend cannot be reached."""
        ...

    # -- users -----------------------------------------------------------------------------
    async def create_user(self, user: UserRecord) -> UserRecord: ...
    async def get_user(self, user_id: str) -> UserRecord: ...
    async def get_user_by_name(self, name: str) -> UserRecord: ...
    async def list_users(
        self, *, limit: int = DEFAULT_PAGE_SIZE, after: str | None = None
    ) -> Page[UserRecord]: ...
    async def update_user(self, user_id: str, changes: Mapping[str, Any]) -> UserRecord: ...
    async def delete_user(self, user_id: str) -> None: ...

    # -- tokens ----------------------------------------------------------------------------
    async def create_token(self, token: TokenRecord) -> TokenRecord: ...
    async def get_token(self, token_id: str) -> TokenRecord: ...
    async def get_token_by_hash(self, token_hash: str) -> TokenRecord: ...
    async def list_tokens(
        self,
        *,
        subject: str | None = None,
        kind: str | None = None,
        limit: int = DEFAULT_PAGE_SIZE,
        after: str | None = None,
    ) -> Page[TokenRecord]: ...
    async def update_token(self, token_id: str, changes: Mapping[str, Any]) -> TokenRecord: ...
    async def delete_token(self, token_id: str) -> None: ...

    # -- projects --------------------------------------------------------------------------
    async def create_project(self, project: ProjectRecord) -> ProjectRecord: ...
    async def get_project(self, project_id: str) -> ProjectRecord: ...
    async def list_projects(
        self,
        *,
        owners: Sequence[str] | None = None,
        project_ids: Sequence[str] | None = None,
        member: str | None = None,
        limit: int = DEFAULT_PAGE_SIZE,
        after: str | None = None,
    ) -> Page[ProjectRecord]:
        """Projects whose owner is in ``owners`` OR whose id is in ``project_ids`` OR that have
        ``member`` among their members (all three OR-ed; all ``None`` = every project)."""
        ...

    async def update_project(
        self, project_id: str, changes: Mapping[str, Any]
    ) -> ProjectRecord: ...
    async def add_project_member(self, project_id: str, user_id: str) -> ProjectRecord:
        """Atomically add ``user_id`` to the members (no-op when already a member)."""
        ...

    async def remove_project_member(self, project_id: str, user_id: str) -> ProjectRecord:
        """Atomically remove ``user_id`` from the members (no-op when not a member)."""
        ...

    async def delete_project(self, project_id: str) -> None: ...

    # -- invitations -----------------------------------------------------------------------
    async def create_invitation(self, invitation: InvitationRecord) -> InvitationRecord: ...
    async def get_invitation(self, invitation_id: str) -> InvitationRecord: ...
    async def get_invitation_by_hash(self, token_hash: str) -> InvitationRecord: ...
    async def list_invitations(
        self, *, project_id: str, limit: int = DEFAULT_PAGE_SIZE, after: str | None = None
    ) -> Page[InvitationRecord]: ...
    async def cas_invitation(
        self, invitation_id: str, expected_version: int, changes: Mapping[str, Any]
    ) -> InvitationRecord:
        """Apply ``changes`` only if the invitation is still at ``expected_version``
        (``Conflict`` otherwise); bumps the version."""
        ...

    async def delete_invitations(self, project_id: str) -> int:
        """Delete every invitation of a project; how many."""
        ...

    # -- nodes -----------------------------------------------------------------------------
    async def create_node(self, node: NodeRecord) -> NodeRecord: ...
    async def get_node(self, node_id: str) -> NodeRecord: ...
    async def list_nodes(
        self,
        *,
        owners: Sequence[str] | None = None,
        project_ids: Sequence[str] | None = None,
        limit: int = DEFAULT_PAGE_SIZE,
        after: str | None = None,
    ) -> Page[NodeRecord]: ...
    async def update_node(self, node_id: str, changes: Mapping[str, Any]) -> NodeRecord: ...
    async def delete_node(self, node_id: str) -> None:
        """Removes the node and its health samples."""

    async def append_node_health(self, sample: NodeHealthRecord, keep: int) -> None:
        """Store a sample and drop all but the ``keep`` newest of its node."""
        ...

    async def read_node_health(self, node_id: str, limit: int) -> list[NodeHealthRecord]:
        """The ``limit`` newest samples of a node, oldest first."""
        ...

    # -- datasets --------------------------------------------------------------------------
    async def create_dataset(self, dataset: DatasetRecord) -> DatasetRecord: ...
    async def get_dataset(self, dataset_id: str) -> DatasetRecord: ...
    async def list_datasets(
        self,
        *,
        owners: Sequence[str] | None = None,
        project_ids: Sequence[str] | None = None,
        node_id: str | None = None,
        limit: int = DEFAULT_PAGE_SIZE,
        after: str | None = None,
    ) -> Page[DatasetRecord]: ...
    async def update_dataset(
        self, dataset_id: str, changes: Mapping[str, Any]
    ) -> DatasetRecord: ...
    async def delete_dataset(self, dataset_id: str) -> None: ...

    # -- designs and code ------------------------------------------------------------------
    async def create_design(self, design: DesignRecord) -> DesignRecord: ...
    async def get_design(self, design_id: str) -> DesignRecord: ...
    async def list_designs(
        self,
        *,
        owners: Sequence[str] | None = None,
        project_ids: Sequence[str] | None = None,
        limit: int = DEFAULT_PAGE_SIZE,
        after: str | None = None,
    ) -> Page[DesignRecord]: ...
    async def update_design(self, design_id: str, changes: Mapping[str, Any]) -> DesignRecord: ...
    async def delete_design(self, design_id: str) -> None:
        """Delete the design and its code version records (not the blobs: they may be shared)."""
        ...

    async def create_code(self, code: CodeRecord) -> CodeRecord:
        """Store a code version; ``AlreadyExists`` when ``(design_id, version)`` is taken, so a
        caller allocating ``latest + 1`` retries on a concurrent push."""
        ...

    async def get_code(self, design_id: str, version: int | None = None) -> CodeRecord:
        """One code version; ``version`` ``None`` (or 0) = the latest."""
        ...

    async def list_code(self, design_id: str) -> list[CodeRecord]:
        """Every code version of a design, oldest first."""
        ...

    async def delete_code(self, design_id: str, version: int) -> None: ...

    # -- jobs ------------------------------------------------------------------------------
    async def create_job(self, job: JobRecord) -> JobRecord: ...
    async def get_job(self, job_id: str) -> JobRecord: ...
    async def list_jobs(
        self,
        *,
        owners: Sequence[str] | None = None,
        project_ids: Sequence[str] | None = None,
        design_id: str | None = None,
        states: Sequence[str] | None = None,
        limit: int = DEFAULT_PAGE_SIZE,
        after: str | None = None,
    ) -> Page[JobRecord]: ...
    async def update_job(self, job_id: str, changes: Mapping[str, Any]) -> JobRecord:
        """Unconditional update (bumps ``version``); use :meth:`cas_job` for state changes."""
        ...

    async def cas_job(
        self,
        job_id: str,
        expected_version: int,
        changes: Mapping[str, Any],
        transition: TransitionRecord | None = None,
    ) -> JobRecord:
        """Atomically: if ``version == expected_version`` apply ``changes``, append
        ``transition`` to ``transitions`` and bump ``version``; return the new record.
        ``Conflict`` when the version moved (nothing written), ``NotFound`` when missing."""
        ...

    async def delete_job(self, job_id: str) -> None:
        """Delete the job and its tasks, log lines and metrics."""
        ...

    async def jobs_to_reconcile(self, now: datetime, *, due_only: bool = False) -> list[JobRecord]:
        """Jobs the reconciler must look at: every job not in a terminal state, plus any job
        whose ``next_check_at <= now``.  With ``due_only`` only the latter.  Ordered by
        ``next_check_at`` (unset last), then ``created_at``."""
        ...

    # -- tasks -----------------------------------------------------------------------------
    async def put_tasks(self, tasks: Sequence[TaskRecord]) -> list[TaskRecord]:
        """Insert the tasks whose id is not stored yet; existing ones are left untouched.
        Returns the stored record for every given id, in the given order (idempotent)."""
        ...

    async def replace_tasks(self, job_id: str, tasks: Sequence[TaskRecord]) -> list[TaskRecord]:
        """Make ``tasks`` the job's whole task set: its other tasks and any stored state of these
        are dropped. Not atomic; running it again finishes an interrupted call."""
        ...

    async def get_task(self, task_id: str) -> TaskRecord: ...
    async def list_tasks(
        self,
        *,
        job_id: str | None = None,
        node_id: str | None = None,
        states: Sequence[str] | None = None,
    ) -> list[TaskRecord]:
        """Matching tasks ordered by ``(job_id, role, index)``."""
        ...

    async def update_task(self, task_id: str, changes: Mapping[str, Any]) -> TaskRecord:
        """Unconditional update (bumps ``version``); use :meth:`cas_task` for state changes."""
        ...

    async def cas_task(
        self,
        task_id: str,
        expected_version: int,
        changes: Mapping[str, Any],
        transition: TransitionRecord | None = None,
    ) -> TaskRecord:
        """Same contract as :meth:`cas_job`, for a task."""
        ...

    # -- logs (task output and service events; retention) --------------------------------
    log_retention: LogRetention

    async def append_logs(self, lines: Sequence[LogLineRecord]) -> int:
        """Append lines (the given ``seq`` is ignored; the store assigns strictly increasing
        numbers per job, in the given order).  All lines must belong to one job
        (``InvalidArgument`` otherwise).  Returns the last assigned seq (0 for no lines).
        Then applies :attr:`log_retention`: the oldest lines past a cap are deleted."""
        ...

    async def read_logs(
        self,
        job_id: str,
        *,
        task_id: str | None = None,
        after_seq: int = 0,
        limit: int = DEFAULT_LOG_LIMIT,
        source: str | None = None,
        node_id: str | None = None,
        levels: Sequence[str] | None = None,
    ) -> list[LogLineRecord]:
        """Lines of a job with ``seq > after_seq`` in seq order, at most ``limit``; only those
        of ``task_id``, ``source``, ``node_id`` and with a level in ``levels`` when given."""
        ...

    async def log_dropped(self, job_id: str) -> int:
        """How many lines of the job retention has deleted so far."""
        ...

    async def last_log_mark(self, job_id: str, task_id: str, stream: str) -> int:
        """The ``mark`` of the newest stored line of a task's stream that has one (0: none)."""
        ...

    # -- metrics ---------------------------------------------------------------------------
    async def append_metrics(self, metrics: Sequence[MetricRecord]) -> None: ...
    async def read_metrics(
        self, job_id: str, *, task_id: str | None = None, key: str | None = None
    ) -> list[MetricRecord]:
        """Metrics of a job in the order they were appended."""
        ...

    async def metrics_since(
        self, job_id: str, after: int = 0, *, task_id: str | None = None
    ) -> tuple[list[MetricRecord], int]:
        """The job's metrics appended after position ``after`` (0: all), in append order, and
        the position of the last one returned (``after`` when none was): a reader that keeps
        it reads only what came since, not the job's whole history again."""
        ...

    # -- blobs (code zips, up to 64 MiB) ---------------------------------------------------
    # audit
    async def append_audit(self, entry: AuditRecord) -> AuditRecord: ...
    async def list_audit(
        self,
        *,
        actor: str | None = None,
        action: str | None = None,
        limit: int = DEFAULT_PAGE_SIZE,
        after: str | None = None,
    ) -> Page[AuditRecord]:
        """Oldest first; filters by actor and action."""
        ...

    # -- idempotency keys ------------------------------------------------------------------
    async def claim_idempotency_key(self, record: IdempotencyRecord) -> IdempotencyRecord:
        """Store ``record`` unless a live record with its id exists, atomically; return the
        stored record: ``record`` itself when the key was free, else the earlier one (compare
        ``fingerprint``).  A record whose ``expires_at`` is not after ``record.created_at``
        counts as free and is replaced."""
        ...

    async def complete_idempotency_key(
        self,
        key_id: str,
        response: str,
        *,
        secret_field: str = "",
        secret_index: int = -1,
        secret_kind: str = "",
    ) -> IdempotencyRecord:
        """Record the response of the request that claimed ``key_id``; ``NotFound`` when the
        record is gone (expired and purged)."""
        ...

    async def purge_idempotency_keys(self, now: datetime) -> int:
        """Delete the records that expired at or before ``now``; how many were deleted."""
        ...

    async def put_blob(self, data: bytes) -> str:
        """Store bytes content-addressed; returns the key (sha256 hex).  Idempotent."""
        ...

    async def get_blob(self, key: str) -> bytes:
        """``NotFound`` when missing; ``InvalidArgument`` for a malformed key."""
        ...

    async def delete_blob(self, key: str) -> None:
        """Delete a blob (no error when already gone)."""
        ...
