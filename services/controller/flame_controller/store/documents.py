"""The typed ``Store`` methods, written once over a few document primitives.

Each backend (:mod:`.sqlite`, :mod:`.mongo`) subclasses :class:`DocumentStore` and implements the
abstract primitives; every rule of the contract (validation, errors, pagination, compare-and-set,
log sequence numbers) lives here so both backends behave the same.

Documents are plain dicts in "python mode": what ``Record.model_dump(by_alias=True)`` returns,
with timezone-aware UTC datetimes.  Each backend encodes them its own way.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar, get_args

from pydantic import ValidationError

from flame_controller.store import kinds as K
from flame_controller.store.base import (
    DEFAULT_LOG_LIMIT,
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    LogRetention,
    Page,
)
from flame_controller.store.blobs import BlobStore
from flame_controller.store.kinds import Kind
from flame_controller.store.query import (
    And,
    Cond,
    Eq,
    Gt,
    In,
    Lte,
    Or,
    all_of,
    visibility,
)
from flame_controller.store.records import (
    JOB_TERMINAL_STATES,
    AuditRecord,
    CodeRecord,
    DatasetRecord,
    DesignRecord,
    IdempotencyRecord,
    InvitationRecord,
    JobRecord,
    JobState,
    LogLineRecord,
    MetricRecord,
    NodeHealthRecord,
    NodeRecord,
    ProjectRecord,
    Record,
    TaskRecord,
    TokenRecord,
    TransitionRecord,
    UserRecord,
)
from flame_service.errors import AlreadyExists, Conflict, InvalidArgument, NotFound

R = TypeVar("R", bound=Record)
Doc = dict[str, Any]

TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
_ID_CHUNK = 500  # ids per IN (...) query
_DROP_CHUNK = 500  # log lines retention deletes per query
_LOG_ORDER = "logs:*"  # the counter of every appended line (no job id has a "*")
_LOG_STORED = "logs-stored"  # how many lines the store holds (for the total cap)
_LOG_DROPPED = "logs-dropped:"  # + job id: lines of the job retention deleted
_JOB_ACTIVE_STATES = tuple(s for s in get_args(JobState) if s not in JOB_TERMINAL_STATES)


def format_time(value: datetime) -> str:
    """Fixed-width UTC text that sorts like the time it stands for."""
    return value.astimezone(UTC).strftime(TIME_FORMAT)


def parse_time(text: str) -> datetime:
    return datetime.strptime(text, TIME_FORMAT).replace(tzinfo=UTC)


def encode_cursor(when: datetime, key: str) -> str:
    raw = f"{format_time(when)}|{key}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _created_at(record: Record) -> datetime:
    when: datetime = getattr(record, "created_at")  # noqa: B009 - every paged kind has one
    return when


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        when, _, key = raw.partition("|")
        return parse_time(when), key
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise InvalidArgument(f"malformed page cursor {cursor!r}") from exc


def _clean_ids(project_ids: Sequence[str] | None) -> Sequence[str] | None:
    # "" means "in no project": it must never make unrelated records visible.
    return None if project_ids is None else [p for p in project_ids if p]


def _source_is(source: str) -> Cond:
    if source == "task":  # lines stored before there were sources are task output
        return Or((Eq("source", "task"), Eq("source", None)))
    return Eq("source", source)


class DocumentStore(ABC):
    """Implements :class:`flame_controller.store.base.Store` over the primitives below."""

    def __init__(self, blobs: BlobStore) -> None:
        self._blobs = blobs
        self._append_lock = asyncio.Lock()
        self.log_retention = LogRetention()

    # ------------------------------------------------------------------ primitives
    @abstractmethod
    async def _insert(self, kind: Kind, key: str, doc: Doc) -> None:
        """Insert one document; ``AlreadyExists`` on a duplicate key or unique field group."""

    @abstractmethod
    async def _insert_missing(self, kind: Kind, items: Sequence[tuple[str, Doc]]) -> None:
        """Insert the documents whose key is not stored yet; leave the others alone."""

    @abstractmethod
    async def _get(self, kind: Kind, key: str) -> Doc | None: ...

    @abstractmethod
    async def _find(
        self, kind: Kind, cond: Cond | None, order: Sequence[str], limit: int | None = None
    ) -> list[tuple[str, Doc]]:
        """Matching ``(key, doc)`` pairs; ``order`` lists fields, ``-field`` for descending."""

    async def _find_records(
        self,
        kind: Kind,
        model: type[R],
        cond: Cond | None,
        order: Sequence[str],
        limit: int | None = None,
    ) -> list[tuple[str, R]]:
        """:meth:`_find`, each document read as its record. A backend that reads documents as
        text may answer an unchanged one with the record it read before."""
        rows = await self._find(kind, cond, order, limit)
        return [(key, self._decode(kind, model, doc)) for key, doc in rows]

    @abstractmethod
    async def _update(
        self,
        kind: Kind,
        key: str,
        set_fields: Doc,
        *,
        expected_version: int | None = None,
        push: tuple[str, Doc] | None = None,
    ) -> Doc | None:
        """One atomic single-document update: set fields, append ``push`` to an array field,
        bump ``version`` for versioned kinds; only if ``version == expected_version`` when
        given.  The new document, or ``None`` when nothing matched.  ``AlreadyExists`` when a
        unique field group would be duplicated."""

    @abstractmethod
    async def _array_add(self, kind: Kind, key: str, field: str, value: Any) -> Doc | None: ...

    @abstractmethod
    async def _array_remove(self, kind: Kind, key: str, field: str, value: Any) -> Doc | None: ...

    @abstractmethod
    async def _delete(self, kind: Kind, cond: Cond) -> int:
        """Delete every matching document; the number deleted."""

    @abstractmethod
    async def _insert_numbered(self, kind: Kind, counter: str, field: str, docs: list[Doc]) -> int:
        """Take the next ``len(docs)`` numbers of a named counter (which starts at 0 and never
        goes back), write them into ``field`` of the documents in order and insert them.
        Returns the last number taken."""

    @abstractmethod
    async def _count_up(self, counter: str, n: int) -> int:
        """Add ``n`` (0: just read) to a named counter (the one :meth:`_insert_numbered` uses)
        and return its new value."""

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def ping(self) -> None: ...

    # ------------------------------------------------------------------ generic helpers
    @staticmethod
    def _doc(record: Record) -> Doc:
        return record.model_dump(by_alias=True)

    @staticmethod
    def _decode(kind: Kind, model: type[R], doc: Doc) -> R:
        for name in kind.hidden:
            doc.pop(name, None)
        return model.model_validate(doc)

    async def _create(self, kind: Kind, record: R) -> R:
        doc = self._doc(record)
        await self._insert(kind, kind.key(doc), doc)
        return record

    async def _fetch(self, kind: Kind, model: type[R], key: str, what: str) -> R:
        doc = await self._get(kind, key)
        if doc is None:
            raise NotFound(f"{what} {key!r} not found")
        return self._decode(kind, model, doc)

    async def _page(
        self,
        kind: Kind,
        model: type[R],
        cond: Cond | None,
        limit: int,
        after: str | None,
    ) -> Page[R]:
        limit = max(1, min(limit, MAX_PAGE_SIZE))
        if after is not None:
            when, key = decode_cursor(after)
            later = Or((Gt("created_at", when), And((Eq("created_at", when), Gt("id", key)))))
            cond = all_of(cond, later)
        rows = await self._find_records(kind, model, cond, ("created_at", "id"), limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        items = [record for _, record in rows]
        next_cursor = encode_cursor(_created_at(items[-1]), rows[-1][0]) if more else None
        return Page(items, next_cursor)

    def _validate_changes(self, kind: Kind, current: Doc, changes: Mapping[str, Any]) -> Doc:
        """Check ``changes`` against the record model; the encoded fields to set."""
        fields = kind.model.model_fields
        by_name = {name: (info.alias or name) for name, info in fields.items()}
        by_name.update({alias: alias for alias in by_name.values()})
        updates: Doc = {}
        for name, value in changes.items():
            if name not in by_name:
                raise InvalidArgument(f"{kind.name} have no field {name!r}")
            doc_key = by_name[name]
            if doc_key in kind.immutable or name in kind.immutable:
                raise InvalidArgument(f"{kind.name} field {name!r} cannot be changed")
            updates[doc_key] = value
        merged = {k: v for k, v in current.items() if k not in kind.hidden}
        merged.update(updates)
        try:
            new_doc = kind.model.model_validate(merged).model_dump(by_alias=True)
        except ValidationError as exc:
            raise InvalidArgument(f"invalid {kind.name} update: {exc}") from exc
        return {k: new_doc[k] for k in updates}

    async def _modify(
        self,
        kind: Kind,
        model: type[R],
        key: str,
        changes: Mapping[str, Any],
        what: str,
        *,
        expected_version: int | None = None,
        transition: TransitionRecord | None = None,
    ) -> R:
        current = await self._get(kind, key)
        if current is None:
            raise NotFound(f"{what} {key!r} not found")
        if expected_version is not None and current.get("version") != expected_version:
            raise Conflict(
                f"{what} {key!r} is at version {current.get('version')}, not {expected_version}"
            )
        set_fields = self._validate_changes(kind, current, changes)
        push = ("transitions", self._doc(transition)) if transition is not None else None
        if not set_fields and push is None and not kind.versioned:
            return self._decode(kind, model, current)
        doc = await self._update(
            kind, key, set_fields, expected_version=expected_version, push=push
        )
        if doc is None:
            if await self._get(kind, key) is None:
                raise NotFound(f"{what} {key!r} not found")
            raise Conflict(f"{what} {key!r} changed since version {expected_version}")
        return self._decode(kind, model, doc)

    async def _remove(self, kind: Kind, key: str, what: str) -> None:
        if await self._delete(kind, Eq("id", key)) == 0:
            raise NotFound(f"{what} {key!r} not found")

    # ------------------------------------------------------------------ users
    async def create_user(self, user: UserRecord) -> UserRecord:
        return await self._create(K.USERS, user)

    async def get_user(self, user_id: str) -> UserRecord:
        return await self._fetch(K.USERS, UserRecord, user_id, "user")

    async def get_user_by_name(self, name: str) -> UserRecord:
        rows = await self._find(K.USERS, Eq("name", name), ("id",), 1)
        if not rows:
            raise NotFound(f"user named {name!r} not found")
        return self._decode(K.USERS, UserRecord, rows[0][1])

    async def list_users(
        self, *, limit: int = DEFAULT_PAGE_SIZE, after: str | None = None
    ) -> Page[UserRecord]:
        return await self._page(K.USERS, UserRecord, None, limit, after)

    async def update_user(self, user_id: str, changes: Mapping[str, Any]) -> UserRecord:
        return await self._modify(K.USERS, UserRecord, user_id, changes, "user")

    async def delete_user(self, user_id: str) -> None:
        await self._remove(K.USERS, user_id, "user")

    # ------------------------------------------------------------------ tokens
    async def create_token(self, token: TokenRecord) -> TokenRecord:
        return await self._create(K.TOKENS, token)

    async def get_token(self, token_id: str) -> TokenRecord:
        return await self._fetch(K.TOKENS, TokenRecord, token_id, "token")

    async def get_token_by_hash(self, token_hash: str) -> TokenRecord:
        rows = await self._find(K.TOKENS, Eq("token_hash", token_hash), ("id",), 1)
        if not rows:
            raise NotFound("token not found")
        return self._decode(K.TOKENS, TokenRecord, rows[0][1])

    async def list_tokens(
        self,
        *,
        subject: str | None = None,
        kind: str | None = None,
        limit: int = DEFAULT_PAGE_SIZE,
        after: str | None = None,
    ) -> Page[TokenRecord]:
        cond = all_of(
            Eq("subject", subject) if subject is not None else None,
            Eq("kind", kind) if kind is not None else None,
        )
        return await self._page(K.TOKENS, TokenRecord, cond, limit, after)

    async def update_token(self, token_id: str, changes: Mapping[str, Any]) -> TokenRecord:
        return await self._modify(K.TOKENS, TokenRecord, token_id, changes, "token")

    async def delete_token(self, token_id: str) -> None:
        await self._remove(K.TOKENS, token_id, "token")

    # ------------------------------------------------------------------ projects
    async def create_project(self, project: ProjectRecord) -> ProjectRecord:
        return await self._create(K.PROJECTS, project)

    async def get_project(self, project_id: str) -> ProjectRecord:
        return await self._fetch(K.PROJECTS, ProjectRecord, project_id, "project")

    async def list_projects(
        self,
        *,
        owners: Sequence[str] | None = None,
        project_ids: Sequence[str] | None = None,
        member: str | None = None,
        limit: int = DEFAULT_PAGE_SIZE,
        after: str | None = None,
    ) -> Page[ProjectRecord]:
        cond = visibility(owners, _clean_ids(project_ids), project_field="id", member=member)
        return await self._page(K.PROJECTS, ProjectRecord, cond, limit, after)

    async def update_project(self, project_id: str, changes: Mapping[str, Any]) -> ProjectRecord:
        return await self._modify(K.PROJECTS, ProjectRecord, project_id, changes, "project")

    async def add_project_member(self, project_id: str, user_id: str) -> ProjectRecord:
        doc = await self._array_add(K.PROJECTS, project_id, "members", user_id)
        if doc is None:
            raise NotFound(f"project {project_id!r} not found")
        return self._decode(K.PROJECTS, ProjectRecord, doc)

    async def remove_project_member(self, project_id: str, user_id: str) -> ProjectRecord:
        doc = await self._array_remove(K.PROJECTS, project_id, "members", user_id)
        if doc is None:
            raise NotFound(f"project {project_id!r} not found")
        return self._decode(K.PROJECTS, ProjectRecord, doc)

    async def delete_project(self, project_id: str) -> None:
        await self._remove(K.PROJECTS, project_id, "project")

    # ------------------------------------------------------------------ invitations
    async def create_invitation(self, invitation: InvitationRecord) -> InvitationRecord:
        return await self._create(K.INVITATIONS, invitation)

    async def get_invitation(self, invitation_id: str) -> InvitationRecord:
        return await self._fetch(K.INVITATIONS, InvitationRecord, invitation_id, "invitation")

    async def get_invitation_by_hash(self, token_hash: str) -> InvitationRecord:
        rows = await self._find(K.INVITATIONS, Eq("token_hash", token_hash), ("id",), 1)
        if not rows:
            raise NotFound("invitation not found")
        return self._decode(K.INVITATIONS, InvitationRecord, rows[0][1])

    async def list_invitations(
        self, *, project_id: str, limit: int = DEFAULT_PAGE_SIZE, after: str | None = None
    ) -> Page[InvitationRecord]:
        cond = Eq("project_id", project_id)
        return await self._page(K.INVITATIONS, InvitationRecord, cond, limit, after)

    async def cas_invitation(
        self, invitation_id: str, expected_version: int, changes: Mapping[str, Any]
    ) -> InvitationRecord:
        return await self._modify(
            K.INVITATIONS,
            InvitationRecord,
            invitation_id,
            changes,
            "invitation",
            expected_version=expected_version,
        )

    async def delete_invitations(self, project_id: str) -> int:
        return await self._delete(K.INVITATIONS, Eq("project_id", project_id))

    # ------------------------------------------------------------------ nodes
    async def create_node(self, node: NodeRecord) -> NodeRecord:
        return await self._create(K.NODES, node)

    async def get_node(self, node_id: str) -> NodeRecord:
        return await self._fetch(K.NODES, NodeRecord, node_id, "node")

    async def list_nodes(
        self,
        *,
        owners: Sequence[str] | None = None,
        project_ids: Sequence[str] | None = None,
        limit: int = DEFAULT_PAGE_SIZE,
        after: str | None = None,
    ) -> Page[NodeRecord]:
        cond = visibility(owners, _clean_ids(project_ids))
        return await self._page(K.NODES, NodeRecord, cond, limit, after)

    async def update_node(self, node_id: str, changes: Mapping[str, Any]) -> NodeRecord:
        return await self._modify(K.NODES, NodeRecord, node_id, changes, "node")

    async def delete_node(self, node_id: str) -> None:
        await self._remove(K.NODES, node_id, "node")
        await self._delete(K.NODE_HEALTH, Eq("node_id", node_id))

    async def append_node_health(self, sample: NodeHealthRecord, keep: int) -> None:
        if keep < 1:
            raise InvalidArgument("keep at least one health sample")
        async with self._append_lock:
            n = await self._insert_numbered(
                K.NODE_HEALTH, f"health:{sample.node_id}", "n", [self._doc(sample)]
            )
            await self._delete(
                K.NODE_HEALTH, And((Eq("node_id", sample.node_id), Lte("n", n - keep)))
            )

    async def read_node_health(self, node_id: str, limit: int) -> list[NodeHealthRecord]:
        rows = await self._find(K.NODE_HEALTH, Eq("node_id", node_id), ("-n",), max(1, limit))
        return [self._decode(K.NODE_HEALTH, NodeHealthRecord, doc) for _, doc in reversed(rows)]

    # ------------------------------------------------------------------ datasets
    async def create_dataset(self, dataset: DatasetRecord) -> DatasetRecord:
        return await self._create(K.DATASETS, dataset)

    async def get_dataset(self, dataset_id: str) -> DatasetRecord:
        return await self._fetch(K.DATASETS, DatasetRecord, dataset_id, "dataset")

    async def list_datasets(
        self,
        *,
        owners: Sequence[str] | None = None,
        project_ids: Sequence[str] | None = None,
        node_id: str | None = None,
        limit: int = DEFAULT_PAGE_SIZE,
        after: str | None = None,
    ) -> Page[DatasetRecord]:
        cond = all_of(
            visibility(owners, _clean_ids(project_ids)),
            Eq("node_id", node_id) if node_id is not None else None,
        )
        return await self._page(K.DATASETS, DatasetRecord, cond, limit, after)

    async def update_dataset(self, dataset_id: str, changes: Mapping[str, Any]) -> DatasetRecord:
        return await self._modify(K.DATASETS, DatasetRecord, dataset_id, changes, "dataset")

    async def delete_dataset(self, dataset_id: str) -> None:
        await self._remove(K.DATASETS, dataset_id, "dataset")

    # ------------------------------------------------------------------ designs and code
    async def create_design(self, design: DesignRecord) -> DesignRecord:
        return await self._create(K.DESIGNS, design)

    async def get_design(self, design_id: str) -> DesignRecord:
        return await self._fetch(K.DESIGNS, DesignRecord, design_id, "design")

    async def list_designs(
        self,
        *,
        owners: Sequence[str] | None = None,
        project_ids: Sequence[str] | None = None,
        limit: int = DEFAULT_PAGE_SIZE,
        after: str | None = None,
    ) -> Page[DesignRecord]:
        cond = visibility(owners, _clean_ids(project_ids))
        return await self._page(K.DESIGNS, DesignRecord, cond, limit, after)

    async def update_design(self, design_id: str, changes: Mapping[str, Any]) -> DesignRecord:
        return await self._modify(K.DESIGNS, DesignRecord, design_id, changes, "design")

    async def delete_design(self, design_id: str) -> None:
        if await self._get(K.DESIGNS, design_id) is None:
            raise NotFound(f"design {design_id!r} not found")
        await self._delete(K.CODE, Eq("design_id", design_id))
        await self._remove(K.DESIGNS, design_id, "design")

    async def create_code(self, code: CodeRecord) -> CodeRecord:
        try:
            return await self._create(K.CODE, code)
        except AlreadyExists as exc:
            raise AlreadyExists(
                f"design {code.design_id!r} already has code version {code.version}"
            ) from exc

    async def get_code(self, design_id: str, version: int | None = None) -> CodeRecord:
        if version:
            return await self._fetch(K.CODE, CodeRecord, K.code_key(design_id, version), "code")
        rows = await self._find(K.CODE, Eq("design_id", design_id), ("-version",), 1)
        if not rows:
            raise NotFound(f"design {design_id!r} has no code")
        return self._decode(K.CODE, CodeRecord, rows[0][1])

    async def list_code(self, design_id: str) -> list[CodeRecord]:
        rows = await self._find(K.CODE, Eq("design_id", design_id), ("version",))
        return [self._decode(K.CODE, CodeRecord, doc) for _, doc in rows]

    async def delete_code(self, design_id: str, version: int) -> None:
        await self._remove(K.CODE, K.code_key(design_id, version), "code version")

    # ------------------------------------------------------------------ jobs
    async def create_job(self, job: JobRecord) -> JobRecord:
        return await self._create(K.JOBS, job)

    async def get_job(self, job_id: str) -> JobRecord:
        return await self._fetch(K.JOBS, JobRecord, job_id, "job")

    async def list_jobs(
        self,
        *,
        owners: Sequence[str] | None = None,
        project_ids: Sequence[str] | None = None,
        design_id: str | None = None,
        states: Sequence[str] | None = None,
        limit: int = DEFAULT_PAGE_SIZE,
        after: str | None = None,
    ) -> Page[JobRecord]:
        cond = all_of(
            visibility(owners, _clean_ids(project_ids)),
            Eq("design_id", design_id) if design_id is not None else None,
            In("state", tuple(states)) if states is not None else None,
        )
        return await self._page(K.JOBS, JobRecord, cond, limit, after)

    async def update_job(self, job_id: str, changes: Mapping[str, Any]) -> JobRecord:
        return await self._modify(K.JOBS, JobRecord, job_id, changes, "job")

    async def cas_job(
        self,
        job_id: str,
        expected_version: int,
        changes: Mapping[str, Any],
        transition: TransitionRecord | None = None,
    ) -> JobRecord:
        return await self._modify(
            K.JOBS,
            JobRecord,
            job_id,
            changes,
            "job",
            expected_version=expected_version,
            transition=transition,
        )

    async def delete_job(self, job_id: str) -> None:
        if await self._get(K.JOBS, job_id) is None:
            raise NotFound(f"job {job_id!r} not found")
        # Children first: a crash half-way leaves the job in place, so the delete can be redone.
        await self._delete(K.TASKS, Eq("job_id", job_id))
        async with self._append_lock:  # its lines no longer count towards the total cap
            gone = await self._delete(K.LOGS, Eq("job_id", job_id))
            await self._count_up(_LOG_STORED, -gone)
        await self._delete(K.METRICS, Eq("job_id", job_id))
        await self._remove(K.JOBS, job_id, "job")

    async def jobs_to_reconcile(self, now: datetime, *, due_only: bool = False) -> list[JobRecord]:
        due = Lte("next_check_at", now)
        cond: Cond = due if due_only else Or((In("state", _JOB_ACTIVE_STATES), due))
        rows = await self._find_records(K.JOBS, JobRecord, cond, ("created_at", "id"))
        jobs = [job for _, job in rows]
        never = datetime.max.replace(tzinfo=UTC)
        jobs.sort(key=lambda j: (j.next_check_at or never, j.created_at, j.id))
        return jobs

    # ------------------------------------------------------------------ tasks
    async def put_tasks(self, tasks: Sequence[TaskRecord]) -> list[TaskRecord]:
        if not tasks:
            return []
        items: dict[str, Doc] = {}
        for task in tasks:
            items.setdefault(task.id, self._doc(task))
        await self._insert_missing(K.TASKS, list(items.items()))
        keys = list(items)
        stored: dict[str, TaskRecord] = {}
        for start in range(0, len(keys), _ID_CHUNK):
            chunk = tuple(keys[start : start + _ID_CHUNK])
            for key, doc in await self._find(K.TASKS, In("id", chunk), ("id",)):
                stored[key] = self._decode(K.TASKS, TaskRecord, doc)
        missing = [key for key in items if key not in stored]
        if missing:  # deleted concurrently (its job was deleted)
            raise NotFound(f"tasks {missing!r} vanished while being stored")
        return [stored[task.id] for task in tasks]

    async def replace_tasks(self, job_id: str, tasks: Sequence[TaskRecord]) -> list[TaskRecord]:
        strays = sorted({t.job_id for t in tasks} - {job_id})
        if strays:
            raise InvalidArgument(f"replace_tasks of job {job_id!r} got tasks of {strays!r}")
        await self._delete(K.TASKS, Eq("job_id", job_id))
        return await self.put_tasks(tasks)

    async def get_task(self, task_id: str) -> TaskRecord:
        return await self._fetch(K.TASKS, TaskRecord, task_id, "task")

    async def list_tasks(
        self,
        *,
        job_id: str | None = None,
        node_id: str | None = None,
        states: Sequence[str] | None = None,
    ) -> list[TaskRecord]:
        cond = all_of(
            Eq("job_id", job_id) if job_id is not None else None,
            Eq("node_id", node_id) if node_id is not None else None,
            In("state", tuple(states)) if states is not None else None,
        )
        rows = await self._find_records(
            K.TASKS, TaskRecord, cond, ("job_id", "role", "index", "id")
        )
        return [task for _, task in rows]

    async def update_task(self, task_id: str, changes: Mapping[str, Any]) -> TaskRecord:
        return await self._modify(K.TASKS, TaskRecord, task_id, changes, "task")

    async def cas_task(
        self,
        task_id: str,
        expected_version: int,
        changes: Mapping[str, Any],
        transition: TransitionRecord | None = None,
    ) -> TaskRecord:
        return await self._modify(
            K.TASKS,
            TaskRecord,
            task_id,
            changes,
            "task",
            expected_version=expected_version,
            transition=transition,
        )

    # ------------------------------------------------------------------ logs
    async def append_logs(self, lines: Sequence[LogLineRecord]) -> int:
        if not lines:
            return 0
        job_ids = {line.job_id for line in lines}
        if len(job_ids) != 1:
            raise InvalidArgument("append_logs takes the lines of one job at a time")
        (job_id,) = job_ids
        # One writer at a time, so a reader polling with after_seq never sees seq n+1 before n.
        async with self._append_lock:
            # ``g`` orders lines over the whole store (the total cap drops the oldest first)
            last_g = await self._count_up(_LOG_ORDER, len(lines))
            first_g = last_g - len(lines) + 1
            docs = [self._doc(line) | {"g": first_g + i} for i, line in enumerate(lines)]
            last = await self._insert_numbered(K.LOGS, f"logs:{job_id}", "seq", docs)
            stored = await self._count_up(_LOG_STORED, len(lines))
            keep = self.log_retention
            if keep.per_job and last > keep.per_job:
                cut = And((Eq("job_id", job_id), Lte("seq", last - keep.per_job)))
                stored -= await self._drop_logs(cut, None)
            if keep.total and stored > keep.total:
                await self._drop_logs(None, stored - keep.total)
            return last

    async def _drop_logs(self, cond: Cond | None, most: int | None) -> int:
        """Delete the lines matching ``cond``, oldest first, at most ``most``; count them per
        job and in the store's line count.  Two steps per chunk: a crash in between leaves that
        chunk out of the counts (the job's dropped count a little low, the store's line count a
        little high, so the total cap then keeps a few lines fewer)."""
        done = 0
        while most is None or done < most:
            want = _DROP_CHUNK if most is None else min(_DROP_CHUNK, most - done)
            rows = await self._find(K.LOGS, cond, ("g",), want)
            if not rows:
                break
            per_job: dict[str, int] = defaultdict(int)
            for _, doc in rows:
                per_job[doc["job_id"]] += 1
            await self._delete(K.LOGS, In("id", tuple(key for key, _ in rows)))
            for job_id, n in per_job.items():
                await self._count_up(f"{_LOG_DROPPED}{job_id}", n)
            await self._count_up(_LOG_STORED, -len(rows))
            done += len(rows)
            if len(rows) < want:
                break
        return done

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
        cond = all_of(
            Eq("job_id", job_id),
            Gt("seq", after_seq),
            Eq("task_id", task_id) if task_id is not None else None,
            _source_is(source) if source is not None else None,
            Eq("node_id", node_id) if node_id is not None else None,
            In("level", tuple(levels)) if levels is not None else None,
        )
        rows = await self._find(K.LOGS, cond, ("seq",), max(1, limit))
        return [self._decode(K.LOGS, LogLineRecord, doc) for _, doc in rows]

    async def log_dropped(self, job_id: str) -> int:
        return await self._count_up(f"{_LOG_DROPPED}{job_id}", 0)

    async def last_log_mark(self, job_id: str, task_id: str, stream: str) -> int:
        cond = And(
            (Eq("job_id", job_id), Eq("task_id", task_id), Eq("stream", stream), Gt("mark", 0))
        )
        rows = await self._find(K.LOGS, cond, ("-seq",), 1)
        return int(rows[0][1]["mark"]) if rows else 0

    # ------------------------------------------------------------------ metrics
    async def append_metrics(self, metrics: Sequence[MetricRecord]) -> None:
        by_job: dict[str, list[MetricRecord]] = defaultdict(list)
        for metric in metrics:
            by_job[metric.job_id].append(metric)
        async with self._append_lock:
            for job_id, batch in by_job.items():
                docs = [self._doc(m) for m in batch]
                await self._insert_numbered(K.METRICS, f"metrics:{job_id}", "n", docs)

    async def read_metrics(
        self, job_id: str, *, task_id: str | None = None, key: str | None = None
    ) -> list[MetricRecord]:
        cond = all_of(
            Eq("job_id", job_id),
            Eq("task_id", task_id) if task_id is not None else None,
            Eq("key", key) if key is not None else None,
        )
        rows = await self._find_records(K.METRICS, MetricRecord, cond, ("n",))
        return [metric for _, metric in rows]

    async def metrics_since(
        self, job_id: str, after: int = 0, *, task_id: str | None = None
    ) -> tuple[list[MetricRecord], int]:
        cond = all_of(
            Eq("job_id", job_id),
            Gt("n", after),
            Eq("task_id", task_id) if task_id is not None else None,
        )
        rows = await self._find(K.METRICS, cond, ("n",))
        last = int(rows[-1][1]["n"]) if rows else after
        return [self._decode(K.METRICS, MetricRecord, doc) for _, doc in rows], last

    # ------------------------------------------------------------------ audit
    async def append_audit(self, entry: AuditRecord) -> AuditRecord:
        return await self._create(K.AUDIT, entry)

    async def list_audit(
        self,
        *,
        actor: str | None = None,
        action: str | None = None,
        limit: int = DEFAULT_PAGE_SIZE,
        after: str | None = None,
    ) -> Page[AuditRecord]:
        cond = all_of(
            Eq("actor", actor) if actor else None,
            Eq("action", action) if action else None,
        )
        return await self._page(K.AUDIT, AuditRecord, cond, limit, after)

    # ------------------------------------------------------------------ idempotency keys
    async def claim_idempotency_key(self, record: IdempotencyRecord) -> IdempotencyRecord:
        for _ in range(5):
            try:
                return await self._create(K.IDEMPOTENCY, record)
            except AlreadyExists:
                doc = await self._get(K.IDEMPOTENCY, record.id)
            if doc is None:
                continue  # expired and purged meanwhile: claim it again
            found = self._decode(K.IDEMPOTENCY, IdempotencyRecord, doc)
            if found.expires_at > record.created_at:
                return found
            expired = And((Eq("id", record.id), Lte("expires_at", record.created_at)))
            await self._delete(K.IDEMPOTENCY, expired)
        raise Conflict(f"idempotency key record {record.id!r} keeps changing; retry")

    async def complete_idempotency_key(
        self,
        key_id: str,
        response: str,
        *,
        secret_field: str = "",
        secret_index: int = -1,
        secret_kind: str = "",
    ) -> IdempotencyRecord:
        changes = {
            "response": response,
            "secret_field": secret_field,
            "secret_index": secret_index,
            "secret_kind": secret_kind,
        }
        return await self._modify(
            K.IDEMPOTENCY, IdempotencyRecord, key_id, changes, "idempotency key"
        )

    async def purge_idempotency_keys(self, now: datetime) -> int:
        return await self._delete(K.IDEMPOTENCY, Lte("expires_at", now))

    # ------------------------------------------------------------------ blobs
    async def put_blob(self, data: bytes) -> str:
        return await self._blobs.put(data)

    async def get_blob(self, key: str) -> bytes:
        return await self._blobs.get(key)

    async def delete_blob(self, key: str) -> None:
        await self._blobs.delete(key)
