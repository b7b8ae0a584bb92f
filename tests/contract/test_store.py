"""One contract suite for every Store backend (SQLite memory/file, MongoDB via mongomock-motor,
a real MongoDB when FLAME_TEST_MONGODB_URI is set)."""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import uuid
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flame_controller.store import (
    CodeRecord,
    DatasetRecord,
    DesignRecord,
    JobRecord,
    LogLineRecord,
    LogRetention,
    MetricRecord,
    NodeHealthRecord,
    NodeRecord,
    ProjectRecord,
    Store,
    TaskRecord,
    TokenRecord,
    TransitionRecord,
    UserRecord,
    open_store,
)
from flame_controller.store.records import IdempotencyRecord, Record
from flame_service.errors import (
    AlreadyExists,
    Conflict,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)

T0 = datetime(2026, 1, 1, 12, 0, 0, 123000, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def job(job_id: str, owner: str = "alice", **kw: Any) -> JobRecord:
    fields: dict[str, Any] = {
        "id": job_id,
        "name": f"job-{job_id}",
        "owner": owner,
        "design_id": "d1",
        "code_version": 1,
        "created_at": T0,
    }
    fields.update(kw)
    return JobRecord(**fields)


def task(job_id: str, role: str, index: int, **kw: Any) -> TaskRecord:
    return TaskRecord(id=f"{job_id}-{role}-{index}", job_id=job_id, role=role, index=index, **kw)


# ---------------------------------------------------------------- CRUD for every resource


@dataclass(frozen=True)
class Resource:
    name: str
    make: Callable[[str], Record]  # id -> record
    change: dict[str, Any]  # a valid update
    key: Callable[[Record], tuple[Any, ...]]

    def create(self, store: Store, rec: Record) -> Awaitable[Any]:
        return getattr(store, f"create_{self.name}")(rec)  # type: ignore[no-any-return]

    def get(self, store: Store, key: tuple[Any, ...]) -> Awaitable[Any]:
        return getattr(store, f"get_{self.name}")(*key)  # type: ignore[no-any-return]

    def delete(self, store: Store, key: tuple[Any, ...]) -> Awaitable[Any]:
        return getattr(store, f"delete_{self.name}")(*key)  # type: ignore[no-any-return]

    def update(self, store: Store, key: tuple[Any, ...], changes: dict[str, Any]) -> Awaitable[Any]:
        return getattr(store, f"update_{self.name}")(*key, changes)  # type: ignore[no-any-return]


def _id(rec: Record) -> tuple[Any, ...]:
    return (rec.id,)  # type: ignore[attr-defined]


RESOURCES = [
    Resource(
        "user",
        lambda i: UserRecord(id=i, name=f"user-{i}", email=f"{i}@example.org", created_at=T0),
        {"email": "new@example.org", "admin": True},
        _id,
    ),
    Resource(
        "token",
        lambda i: TokenRecord(
            id=i,
            kind="api",
            scope="user",
            subject="alice",
            token_hash=hashlib.sha256(i.encode()).hexdigest(),
            expires_at=at(3600),
            created_at=T0,
        ),
        {"revoked": True},
        _id,
    ),
    Resource(
        "project",
        lambda i: ProjectRecord(id=i, name=f"p-{i}", owner="alice", members=["bob"], created_at=T0),
        {"description": "shared with bob"},
        _id,
    ),
    Resource(
        "node",
        lambda i: NodeRecord(
            id=i,
            name=f"n-{i}",
            owner="alice",
            labels={"kubernetes.io/arch": "amd64", "zone": "eu"},
            facts={"cpus": 8, "os": {"name": "linux", "release": "6.1"}},
            created_at=T0,
        ),
        {"presence": "online", "last_seen": at(5), "labels": {"gpu": "a100"}},
        _id,
    ),
    Resource(
        "dataset",
        lambda i: DatasetRecord(
            id=i, name=f"ds-{i}", owner="alice", node_id="n1", size_bytes=2**40, created_at=T0
        ),
        {"realm": "eu/hospital-b", "description": "Ünïcode ✓"},
        _id,
    ),
    Resource(
        "design",
        lambda i: DesignRecord(
            id=i,
            name=f"d-{i}",
            owner="alice",
            schema={"roles": [{"name": "trainer"}]},
            created_at=T0,
        ),
        {"schema": {"roles": []}, "version": 2},
        _id,
    ),
    Resource(
        "job",
        lambda i: job(i, spec={"hyperparameters": {"rounds": 3, "lr": 0.1}}),
        {"spec": {"hyperparameters": {"rounds": 5}}, "desired_state": "running"},
        _id,
    ),
]


@pytest.mark.parametrize("res", RESOURCES, ids=lambda r: r.name)
async def test_crud_round_trip(store: Store, res: Resource) -> None:
    rec = res.make("r1")
    assert await res.create(store, rec) == rec
    assert await res.get(store, res.key(rec)) == rec

    updated = await res.update(store, res.key(rec), res.change)
    expected = rec.model_copy(update={_field(rec, k): v for k, v in res.change.items()})
    if hasattr(rec, "version") and isinstance(rec, JobRecord | TaskRecord):
        expected = expected.model_copy(update={"version": rec.version + 1})
    assert updated == expected
    assert await res.get(store, res.key(rec)) == expected

    await res.delete(store, res.key(rec))
    with pytest.raises(NotFound):
        await res.get(store, res.key(rec))


def _field(rec: Record, name: str) -> str:
    return "schema_" if name == "schema" else name


@pytest.mark.parametrize("res", RESOURCES, ids=lambda r: r.name)
async def test_missing_records_raise_not_found(store: Store, res: Resource) -> None:
    with pytest.raises(NotFound):
        await res.get(store, ("nope",))
    with pytest.raises(NotFound):
        await res.update(store, ("nope",), res.change)
    with pytest.raises(NotFound):
        await res.delete(store, ("nope",))


@pytest.mark.parametrize("res", RESOURCES, ids=lambda r: r.name)
async def test_duplicate_id_is_rejected(store: Store, res: Resource) -> None:
    first = res.make("r1")
    await res.create(store, first)
    clash = res.make("r1").model_copy(update={"created_at": at(1)})
    if hasattr(clash, "name"):
        clash = clash.model_copy(update={"name": "another-name"})
    if isinstance(clash, TokenRecord):
        clash = clash.model_copy(update={"token_hash": "another-hash"})
    with pytest.raises(AlreadyExists):
        await res.create(store, clash)
    assert await res.get(store, res.key(first)) == first


OWNED = [r for r in RESOURCES if r.name in {"project", "node", "dataset", "design", "job"}]


@pytest.mark.parametrize("res", OWNED, ids=lambda r: r.name)
async def test_owner_and_name_are_unique(store: Store, res: Resource) -> None:
    await res.create(store, res.make("a"))
    same_name = res.make("b").model_copy(update={"name": "shared"})
    await res.create(store, res.make("c").model_copy(update={"name": "shared", "owner": "bob"}))
    await res.create(store, same_name)  # same name, other owner: fine
    with pytest.raises(AlreadyExists):
        await res.create(store, res.make("d").model_copy(update={"name": "shared"}))
    # renaming onto a taken name is refused and changes nothing
    with pytest.raises(AlreadyExists):
        await res.update(store, ("a",), {"name": "shared"})
    assert (await res.get(store, ("a",))).name == res.make("a").name  # type: ignore[attr-defined]


async def test_user_names_and_token_hashes_are_unique(store: Store) -> None:
    await store.create_user(UserRecord(id="u1", name="alice"))
    with pytest.raises(AlreadyExists):
        await store.create_user(UserRecord(id="u2", name="alice"))
    assert (await store.get_user_by_name("alice")).id == "u1"
    with pytest.raises(NotFound):
        await store.get_user_by_name("bob")

    tok = TokenRecord(id="t1", kind="node", scope="node", subject="n1", token_hash="h1")
    await store.create_token(tok)
    with pytest.raises(AlreadyExists):
        await store.create_token(tok.model_copy(update={"id": "t2"}))
    assert await store.get_token_by_hash("h1") == tok
    with pytest.raises(NotFound):
        await store.get_token_by_hash("h2")


async def test_bad_updates_are_refused_and_change_nothing(store: Store) -> None:
    original = await store.create_job(job("j1"))
    for changes in (
        {"no_such_field": 1},
        {"id": "j2"},
        {"created_at": at(9)},
        {"version": 7},
        {"transitions": []},
        {"state": "exploded"},
        {"code_version": "not a number"},
        {"deadline": datetime(2026, 1, 1)},  # naive datetime
    ):
        with pytest.raises(InvalidArgument):
            await store.update_job("j1", changes)
        with pytest.raises(InvalidArgument):
            await store.cas_job("j1", 0, changes)
    assert await store.get_job("j1") == original


# ---------------------------------------------------------------- code versions and blobs


async def test_code_versions(store: Store) -> None:
    await store.create_design(DesignRecord(id="d1", name="mnist", owner="alice"))
    with pytest.raises(NotFound):
        await store.get_code("d1")
    zips = [b"PK zip one", b"PK zip two"]
    for version, data in enumerate(zips, start=1):
        key = await store.put_blob(data)
        assert key == hashlib.sha256(data).hexdigest()
        await store.create_code(
            CodeRecord(
                design_id="d1",
                version=version,
                sha256=key,
                size_bytes=len(data),
                roles=["trainer", "aggregator"],
                blob_key=key,
            )
        )
    with pytest.raises(AlreadyExists):
        await store.create_code(
            CodeRecord(design_id="d1", version=2, sha256="x", size_bytes=1, blob_key="x")
        )
    latest = await store.get_code("d1")
    assert latest.version == 2 and await store.get_code("d1", 0) == latest
    assert (await store.get_code("d1", 1)).sha256 == hashlib.sha256(zips[0]).hexdigest()
    assert [c.version for c in await store.list_code("d1")] == [1, 2]
    assert await store.get_blob(latest.blob_key) == zips[1]

    await store.delete_code("d1", 2)
    assert (await store.get_code("d1")).version == 1
    with pytest.raises(NotFound):
        await store.delete_code("d1", 2)
    await store.delete_design("d1")
    assert await store.list_code("d1") == []


async def test_blobs(store: Store) -> None:
    data = bytes(range(256)) * 4096  # 1 MiB
    key = await store.put_blob(data)
    assert await store.put_blob(data) == key  # idempotent
    assert await store.get_blob(key) == data
    await store.delete_blob(key)
    await store.delete_blob(key)  # already gone: fine
    with pytest.raises(NotFound):
        await store.get_blob(key)
    for bad in ("../../etc/passwd", "ABC", key.upper(), ""):
        with pytest.raises(InvalidArgument):
            await store.get_blob(bad)


# ---------------------------------------------------------------- visibility and pagination


async def test_visibility_filters(store: Store) -> None:
    await store.create_job(job("a1", owner="alice"))
    await store.create_job(job("a2", owner="alice", project_id="p1"))
    await store.create_job(job("b1", owner="bob", project_id="p1"))
    await store.create_job(job("b2", owner="bob", project_id="p2"))
    await store.create_job(job("c1", owner="carol"))

    async def ids(**kw: Any) -> set[str]:
        return {j.id for j in (await store.list_jobs(**kw)).items}

    assert await ids() == {"a1", "a2", "b1", "b2", "c1"}
    assert await ids(owners=["alice"]) == {"a1", "a2"}
    assert await ids(project_ids=["p1"]) == {"a2", "b1"}
    assert await ids(owners=["alice"], project_ids=["p2"]) == {"a1", "a2", "b2"}
    assert await ids(owners=[]) == set()
    assert await ids(owners=[], project_ids=[]) == set()
    # "" is "in no project": it must not reveal the project-less jobs of others
    assert await ids(owners=["bob"], project_ids=[""]) == {"b1", "b2"}
    assert await ids(owners=["alice"], design_id="other") == set()
    assert await ids(states=["ready"], owners=["carol"]) == {"c1"}
    assert await ids(states=["running"]) == set()


async def test_project_membership(store: Store) -> None:
    await store.create_project(ProjectRecord(id="p1", name="one", owner="alice"))
    await store.create_project(ProjectRecord(id="p2", name="two", owner="bob", members=["carol"]))
    await store.create_project(ProjectRecord(id="p3", name="three", owner="carol"))
    project = await store.add_project_member("p1", "carol")
    assert project.members == ["carol"]
    assert (await store.add_project_member("p1", "carol")).members == ["carol"]
    await store.add_project_member("p1", "dave")

    async def ids(**kw: Any) -> set[str]:
        return {p.id for p in (await store.list_projects(**kw)).items}

    assert await ids(member="carol") == {"p1", "p2"}
    assert await ids(owners=["carol"], member="carol") == {"p1", "p2", "p3"}
    assert await ids(project_ids=["p3"], member="dave") == {"p1", "p3"}
    assert (await store.remove_project_member("p1", "carol")).members == ["dave"]
    assert await ids(member="carol") == {"p2"}
    with pytest.raises(NotFound):
        await store.add_project_member("nope", "carol")


async def test_concurrent_member_adds_are_not_lost(store: Store) -> None:
    await store.create_project(ProjectRecord(id="p1", name="one", owner="alice"))
    users = [f"user{i}" for i in range(20)]
    await asyncio.gather(*(store.add_project_member("p1", u) for u in users))
    assert sorted((await store.get_project("p1")).members) == sorted(users)


async def test_pagination_loses_and_repeats_nothing(store: Store) -> None:
    # Several records share a created_at (ties are broken by id); ids are not in time order.
    created = []
    for i in range(23):
        rec = job(f"{(i * 7) % 23:02d}", created_at=at(i // 3))
        created.append(await store.create_job(rec))
    expected = [j.id for j in sorted(created, key=lambda j: (j.created_at, j.id))]

    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        page = await store.list_jobs(limit=5, after=cursor)
        seen.extend(j.id for j in page.items)
        pages += 1
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
        if pages == 2:  # records created or deleted mid-way do not disturb the others
            await store.create_job(job("zz-late", created_at=at(100)))
            await store.delete_job(expected[0])
    assert pages == 5
    assert seen == [*expected, "zz-late"]
    assert len(seen) == len(set(seen))

    expected = [*expected[1:], "zz-late"]
    for size in (1, 2, 3, 11, 23, 24, 1000):
        walked: list[str] = []
        cursor = None
        while True:
            items, cursor = await store.list_jobs(limit=size, after=cursor)
            assert len(items) <= size
            walked.extend(j.id for j in items)
            if cursor is None:
                break
        assert walked == expected, size
    with pytest.raises(InvalidArgument):
        await store.list_jobs(after="%%% not a cursor")


async def test_other_lists_filter_and_page(store: Store) -> None:
    for i in range(3):
        await store.create_dataset(
            DatasetRecord(id=f"d{i}", name=f"d{i}", owner="alice", node_id=f"n{i % 2}")
        )
        await store.create_token(
            TokenRecord(
                id=f"t{i}",
                kind="api" if i else "node",
                scope="user",
                subject="alice",
                token_hash=f"h{i}",
            )
        )
        await store.create_user(UserRecord(id=f"u{i}", name=f"u{i}"))
        await store.create_node(NodeRecord(id=f"n{i}", name=f"n{i}", owner="alice"))
        await store.create_design(DesignRecord(id=f"g{i}", name=f"g{i}", owner="bob"))
    assert {d.id for d in (await store.list_datasets(node_id="n0")).items} == {"d0", "d2"}
    assert {t.id for t in (await store.list_tokens(subject="alice", kind="api")).items} == {
        "t1",
        "t2",
    }
    users = await store.list_users(limit=2)
    rest = await store.list_users(limit=2, after=users.next_cursor)
    assert [u.id for u in users.items + rest.items] == ["u0", "u1", "u2"]
    assert rest.next_cursor is None
    assert len((await store.list_nodes(owners=["alice"])).items) == 3
    assert (await store.list_designs(owners=["alice"])).items == []


# ---------------------------------------------------------------- compare-and-set


async def test_cas_applies_changes_and_keeps_transitions_in_order(store: Store) -> None:
    await store.create_job(job("j1"))
    path = ["starting", "deploying", "running", "completed"]
    current = await store.get_job("j1")
    for n, state in enumerate(path):
        current = await store.cas_job(
            "j1",
            current.version,
            {"state": state, "reason": f"step {n}", "next_check_at": at(n)},
            TransitionRecord(
                from_state=current.state, to_state=state, reason=f"step {n}", at=at(n)
            ),
        )
    stored = await store.get_job("j1")
    assert stored == current
    assert stored.version == len(path)
    assert stored.state == "completed" and stored.reason == "step 3"
    assert [(t.from_state, t.to_state, t.at) for t in stored.transitions] == [
        ("ready", "starting", at(0)),
        ("starting", "deploying", at(1)),
        ("deploying", "running", at(2)),
        ("running", "completed", at(3)),
    ]


async def test_stale_cas_raises_conflict_and_changes_nothing(store: Store) -> None:
    await store.create_job(job("j1"))
    moved = await store.cas_job("j1", 0, {"state": "starting"})
    with pytest.raises(Conflict):
        await store.cas_job(
            "j1", 0, {"state": "failed"}, TransitionRecord(from_state="ready", to_state="failed")
        )
    assert await store.get_job("j1") == moved
    with pytest.raises(NotFound):
        await store.cas_job("nope", 0, {"state": "starting"})
    # a plain update also moves the version, so a CAS based on the old read loses
    await store.update_job("j1", {"reason": "operator note"})
    with pytest.raises(Conflict):
        await store.cas_job("j1", moved.version, {"state": "deploying"})


async def test_concurrent_cas_exactly_one_wins(store: Store) -> None:
    await store.create_job(job("j1"))
    await store.put_tasks([task("j1", "trainer", 0)])

    async def attempt(state: str) -> str:
        try:
            await store.cas_job(
                "j1", 0, {"state": state}, TransitionRecord(from_state="ready", to_state=state)
            )
        except Conflict:
            return "lost"
        return state

    results = await asyncio.gather(*(attempt(s) for s in ["starting", "failed"] * 5))
    winners = [r for r in results if r != "lost"]
    assert len(winners) == 1
    stored = await store.get_job("j1")
    assert stored.state == winners[0] and stored.version == 1 and len(stored.transitions) == 1

    async def task_attempt(attempt_no: int) -> bool:
        try:
            await store.cas_task("j1-trainer-0", 0, {"attempt": attempt_no})
        except Conflict:
            return False
        return True

    task_results = await asyncio.gather(*(task_attempt(i) for i in range(1, 9)))
    assert task_results.count(True) == 1
    assert (await store.get_task("j1-trainer-0")).attempt == task_results.index(True) + 1


async def test_cas_is_atomic_when_every_contender_read_the_same_version(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Force the worst interleaving: all contenders read version 0 before any of them writes,
    so only the store's atomic version check can stop the losers."""
    await store.create_job(job("j1"))
    contenders = 6
    reads = 0
    all_read = asyncio.Event()
    real_get = store._get  # type: ignore[attr-defined]

    async def get_then_wait(kind: Any, key: str) -> Any:
        nonlocal reads
        doc = await real_get(kind, key)
        if kind.name == "jobs" and not all_read.is_set():
            reads += 1
            if reads == contenders:
                all_read.set()
            await all_read.wait()
        return doc

    monkeypatch.setattr(store, "_get", get_then_wait)

    async def attempt(n: int) -> bool:
        try:
            await store.cas_job("j1", 0, {"reason": f"contender {n}"})
        except Conflict:
            return False
        return True

    results = await asyncio.gather(*(attempt(n) for n in range(contenders)))
    assert results.count(True) == 1
    monkeypatch.undo()
    stored = await store.get_job("j1")
    assert stored.version == 1 and stored.reason == f"contender {results.index(True)}"


async def test_concurrent_cas_across_two_sqlite_connections(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'shared.db'}"
    first, second = await open_store(uri), await open_store(uri)
    try:
        await first.create_job(job("j1"))

        async def attempt(store: Store, state: str) -> bool:
            try:
                await store.cas_job("j1", 0, {"state": state})
            except Conflict:
                return False
            return True

        results = await asyncio.gather(
            *(attempt(s, st) for s, st in [(first, "starting"), (second, "failed")] * 4)
        )
        assert results.count(True) == 1
        assert (await first.get_job("j1")) == (await second.get_job("j1"))
    finally:
        await first.close()
        await second.close()


# ---------------------------------------------------------------- tasks


async def test_put_tasks_is_idempotent(store: Store) -> None:
    await store.create_job(job("j1"))
    planned = [task("j1", "trainer", i, node_id=f"n{i}", dataset_id=f"d{i}") for i in range(3)]
    planned.append(task("j1", "aggregator", 0, config={"role": "aggregator"}))
    stored = await store.put_tasks(planned)
    assert stored == planned

    running = await store.cas_task(
        "j1-trainer-1",
        0,
        {"state": "running", "handle": "pid-4242", "info": {"run_uri": "runs:/abc"}},
        TransitionRecord(from_state="pending", to_state="running"),
    )
    # the builder runs again (e.g. after a controller restart): nothing new, nothing reset
    again = await store.put_tasks([t.model_copy(update={"reason": "rebuilt"}) for t in planned])
    assert again[1] == running
    assert [t.id for t in again] == [t.id for t in planned]
    assert len(await store.list_tasks(job_id="j1")) == 4
    assert await store.get_task("j1-trainer-1") == running


async def test_replace_tasks_swaps_one_jobs_task_set(store: Store) -> None:
    await store.create_job(job("j1"))
    await store.put_tasks([task("j1", "trainer", i) for i in range(3)] + [task("j2", "trainer", 0)])
    await store.cas_task("j1-trainer-0", 0, {"state": "running"})
    new = [task("j1", "trainer", 0, config={"lr": 0.5}), task("j1", "aggregator", 0)]
    assert await store.replace_tasks("j1", new) == new
    assert await store.list_tasks(job_id="j1") == sorted(new, key=lambda t: (t.role, t.index))
    assert (await store.get_task("j1-trainer-0")).state == "pending"  # stored state dropped
    assert [t.id for t in await store.list_tasks(job_id="j2")] == ["j2-trainer-0"]
    assert await store.replace_tasks("j1", new) == new  # a rerun changes nothing
    with pytest.raises(InvalidArgument, match="j2"):
        await store.replace_tasks("j1", [task("j2", "trainer", 1)])
    assert [t.id for t in await store.list_tasks(job_id="j1")] == [t.id for t in new[::-1]]
    assert await store.replace_tasks("j1", []) == []
    assert await store.list_tasks(job_id="j1") == []


async def test_put_tasks_many_at_once(store: Store) -> None:
    planned = [task("big", "trainer", i) for i in range(620)]
    assert await store.put_tasks(planned) == planned
    assert await store.put_tasks(planned[::-1]) == planned[::-1]
    assert len(await store.list_tasks(job_id="big")) == 620
    assert await store.put_tasks([]) == []


async def test_list_tasks_filters(store: Store) -> None:
    await store.put_tasks(
        [
            task("j1", "trainer", 1, node_id="n1"),
            task("j1", "trainer", 0, node_id="n2"),
            task("j1", "aggregator", 0),
            task("j2", "trainer", 0, node_id="n1"),
        ]
    )
    await store.update_task("j2-trainer-0", {"state": "scheduled"})
    assert [t.id for t in await store.list_tasks(job_id="j1")] == [
        "j1-aggregator-0",
        "j1-trainer-0",
        "j1-trainer-1",
    ]
    assert {t.id for t in await store.list_tasks(node_id="n1")} == {"j1-trainer-1", "j2-trainer-0"}
    assert [t.id for t in await store.list_tasks(states=["scheduled"])] == ["j2-trainer-0"]
    assert await store.list_tasks(job_id="j1", states=["scheduled"]) == []
    assert (await store.get_task("j2-trainer-0")).version == 1
    with pytest.raises(NotFound):
        await store.get_task("nope")


# ---------------------------------------------------------------- logs and metrics


async def test_log_seq_strictly_increasing(store: Store) -> None:
    async def ship(task_id: str, batch: int) -> int:
        lines = [
            LogLineRecord(job_id="j1", task_id=task_id, line=f"{task_id} batch {batch} line {i}")
            for i in range(5)
        ]
        return await store.append_logs(lines)

    lasts = await asyncio.gather(*(ship(f"t{b % 3}", b) for b in range(12)))
    assert sorted(lasts) == [5 * (i + 1) for i in range(12)]
    lines = await store.read_logs("j1", limit=1000)
    assert [line.seq for line in lines] == list(range(1, 61))
    # lines of one call stay together and in order
    for start in range(0, 60, 5):
        batch = lines[start : start + 5]
        assert [line.line.rsplit(" ", 1)[1] for line in batch] == ["0", "1", "2", "3", "4"]

    follow = await store.read_logs("j1", after_seq=57)
    assert [line.seq for line in follow] == [58, 59, 60]
    assert [line.seq for line in await store.read_logs("j1", after_seq=10, limit=3)] == [11, 12, 13]
    t1 = await store.read_logs("j1", task_id="t1")
    assert t1 and all(line.task_id == "t1" for line in t1)
    assert len(t1) == 20

    # another job has its own sequence
    assert await store.append_logs([LogLineRecord(job_id="j2", task_id="x", line="hi")]) == 1
    assert await store.append_logs([]) == 0
    with pytest.raises(InvalidArgument):
        await store.append_logs(
            [
                LogLineRecord(job_id="j1", task_id="x", line="a"),
                LogLineRecord(job_id="j2", task_id="x", line="b"),
            ]
        )
    after = await store.append_logs(
        [LogLineRecord(job_id="j1", task_id="t0", line="late", stream="stderr", at=at(1))]
    )
    assert after == 61
    (late,) = await store.read_logs("j1", after_seq=60)
    assert late == LogLineRecord(
        job_id="j1", task_id="t0", line="late", stream="stderr", at=at(1), seq=61
    )


async def test_service_log_lines_are_filtered_by_source_node_and_level(store: Store) -> None:
    await store.append_logs(
        [
            LogLineRecord(job_id="j1", task_id="t0", line="epoch 1", node_id="n1"),
            LogLineRecord(
                job_id="j1",
                task_id="",
                line="job.started",
                stream="service",
                source="controller",
                level="info",
            ),
            LogLineRecord(
                job_id="j1",
                task_id="t0",
                line="agent.gone",
                stream="service",
                source="notifier",
                node_id="n1",
                level="warning",
            ),
            LogLineRecord(job_id="j1", task_id="t1", line="epoch 1", node_id="n2"),
        ]
    )
    lines = await store.read_logs("j1")
    assert [(x.seq, x.source, x.level) for x in lines] == [
        (1, "task", ""),
        (2, "controller", "info"),
        (3, "notifier", "warning"),
        (4, "task", ""),
    ]
    assert [x.seq for x in await store.read_logs("j1", source="controller")] == [2]
    assert [x.seq for x in await store.read_logs("j1", source="task")] == [1, 4]
    assert [x.seq for x in await store.read_logs("j1", node_id="n1")] == [1, 3]
    assert [x.seq for x in await store.read_logs("j1", levels=["warning", "error"])] == [3]
    assert [x.seq for x in await store.read_logs("j1", node_id="n1", source="task")] == [1]
    assert await store.read_logs("j1", source="apiserver") == []


async def test_a_deleted_jobs_lines_no_longer_count_towards_the_total_cap(store: Store) -> None:
    store.log_retention = LogRetention(total=10)
    await store.create_job(job("j9"))
    await store.append_logs([LogLineRecord(job_id="j9", task_id="t", line="x")] * 8)
    await store.delete_job("j9")
    await store.append_logs([LogLineRecord(job_id="j10", task_id="t", line="y")] * 8)
    assert len(await store.read_logs("j10")) == 8
    assert await store.log_dropped("j10") == 0


async def test_last_log_mark_is_the_newest_marked_line_of_a_task_stream(store: Store) -> None:
    assert await store.last_log_mark("j1", "t0", "stdout") == 0
    await store.append_logs(
        [
            LogLineRecord(job_id="j1", task_id="t0", line="a", mark=10),
            LogLineRecord(job_id="j1", task_id="t0", line="b", stream="stderr", mark=7),
            LogLineRecord(job_id="j1", task_id="t1", line="c", mark=99),
            LogLineRecord(job_id="j1", task_id="t0", line="d", mark=25),
            LogLineRecord(job_id="j1", task_id="t0", line="e"),  # no mark
        ]
    )
    assert await store.last_log_mark("j1", "t0", "stdout") == 25
    assert await store.last_log_mark("j1", "t0", "stderr") == 7
    assert await store.last_log_mark("j1", "t1", "stdout") == 99
    assert await store.last_log_mark("j2", "t0", "stdout") == 0


async def test_log_retention_drops_the_oldest_lines_and_counts_them(store: Store) -> None:
    store.log_retention = LogRetention(per_job=10, total=25)

    async def ship(job_id: str, n: int, tag: str) -> int:
        lines = [LogLineRecord(job_id=job_id, task_id="t", line=f"{tag}{i}") for i in range(n)]
        return await store.append_logs(lines)

    assert await ship("j1", 7, "a") == 7
    assert await store.log_dropped("j1") == 0
    assert await ship("j1", 7, "b") == 14  # the job's cap: the four oldest go
    kept = await store.read_logs("j1")
    assert [x.seq for x in kept] == list(range(5, 15))
    assert [x.line for x in kept][:3] == ["a4", "a5", "a6"]
    assert await store.log_dropped("j1") == 4

    await ship("j2", 9, "c")
    await ship("j3", 9, "d")  # 10 + 9 + 9 = 28 lines: the total cap drops j1's three oldest
    assert [x.seq for x in await store.read_logs("j1")] == list(range(8, 15))
    assert await store.log_dropped("j1") == 7
    assert await store.log_dropped("j2") == 0
    await ship("j3", 9, "e")  # the job cap first (j3: 18 > 10 drops 8), then 7 + 9 + 10 = 26
    assert [x.seq for x in await store.read_logs("j3")] == list(range(9, 19))
    assert await store.log_dropped("j3") == 8
    assert [x.seq for x in await store.read_logs("j1")] == list(range(9, 15))
    assert await store.log_dropped("j1") == 8
    assert [len(await store.read_logs(j)) for j in ("j1", "j2", "j3")] == [6, 9, 10]  # 25
    # a batch larger than the cap keeps only its newest lines
    await ship("j4", 40, "f")
    assert [x.line for x in await store.read_logs("j4")] == [f"f{i}" for i in range(30, 40)]
    assert await store.log_dropped("j4") == 30
    assert await store.log_dropped("nope") == 0


async def test_metrics(store: Store) -> None:
    batch = [
        MetricRecord(
            job_id="j1", task_id="agg", key="accuracy", value=0.5 + r / 100, step=r, at=at(r)
        )
        for r in range(5)
    ]
    await store.append_metrics(batch[:2])
    await store.append_metrics(
        [MetricRecord(job_id="j1", task_id="agg", key="loss", value=float("inf"), step=0, at=T0)]
    )
    await store.append_metrics(batch[2:])
    await store.append_metrics([MetricRecord(job_id="j2", task_id="x", key="accuracy", value=1.0)])
    assert await store.read_metrics("j1", key="accuracy") == batch
    all_j1 = await store.read_metrics("j1")
    assert [m.key for m in all_j1] == ["accuracy", "accuracy", "loss"] + ["accuracy"] * 3
    assert all_j1[2].value == float("inf")
    assert await store.read_metrics("j1", task_id="nobody") == []


async def test_metrics_since_a_position_reads_only_what_came_after(store: Store) -> None:
    """A reader that keeps the position it read up to asks only for what was appended since:
    the controller's dedupe of each report, and the metrics a watcher polls."""

    def metric(task: str, step: int, job: str = "j1") -> MetricRecord:
        return MetricRecord(job_id=job, task_id=task, key="k", value=step, step=step, at=at(step))

    first = [metric("agg", 0), metric("t1", 0), metric("agg", 1)]
    await store.append_metrics(first)
    await store.append_metrics([metric("agg", 9, job="j2")])
    got, pos = await store.metrics_since("j1")
    assert got == first and pos > 0
    assert await store.metrics_since("j1", pos) == ([], pos)  # nothing new: the same position
    await store.append_metrics([metric("t1", 1), metric("agg", 2)])
    got, later = await store.metrics_since("j1", pos)
    assert got == [metric("t1", 1), metric("agg", 2)] and later > pos
    mine, mine_pos = await store.metrics_since("j1", pos, task_id="agg")
    assert mine == [metric("agg", 2)] and pos < mine_pos <= later
    assert await store.metrics_since("j1", 0, task_id="nobody") == ([], 0)
    assert await store.metrics_since("nope") == ([], 0)


async def test_delete_job_removes_its_tasks_logs_and_metrics(store: Store) -> None:
    for job_id in ("j1", "j2"):
        await store.create_job(job(job_id))
        await store.put_tasks([task(job_id, "trainer", 0)])
        await store.append_logs([LogLineRecord(job_id=job_id, task_id="t", line="x")])
        await store.append_metrics([MetricRecord(job_id=job_id, task_id="t", key="k", value=1)])
    await store.delete_job("j1")
    assert await store.list_tasks(job_id="j1") == []
    assert await store.read_logs("j1") == []
    assert await store.read_metrics("j1") == []
    assert len(await store.list_tasks(job_id="j2")) == 1
    assert len(await store.read_logs("j2")) == 1
    assert len(await store.read_metrics("j2")) == 1


def health(node_id: str, i: int) -> NodeHealthRecord:
    return NodeHealthRecord(
        node_id=node_id,
        at=at(i),
        cpu_percent=float(i % 101),
        cpu_count=4,
        load1=0.5,
        memory_used_bytes=i * 1000,
        memory_total_bytes=10**9,
        disk_used_bytes=i,
        disk_total_bytes=10**12,
        net_sent_bytes=i * 7,
        net_recv_bytes=i * 9,
        gpus=[]
        if i % 2
        else [
            {
                "index": 0,
                "name": "G",
                "utilization_percent": 12.5,
                "memory_used_bytes": 1,
                "memory_total_bytes": 2,
            }
        ],
    )


async def test_node_health_keeps_the_newest_samples_per_node(store: Store) -> None:
    for i in range(7):
        await store.append_node_health(health("n1", i), keep=5)
        await store.append_node_health(health("n2", 100 + i), keep=2)
    assert await store.read_node_health("n1", 100) == [health("n1", i) for i in range(2, 7)]
    assert await store.read_node_health("n1", 2) == [health("n1", 5), health("n1", 6)]
    assert await store.read_node_health("n2", 100) == [health("n2", 105), health("n2", 106)]
    assert await store.read_node_health("n3", 10) == []
    with pytest.raises(InvalidArgument):
        await store.append_node_health(health("n1", 9), keep=0)


async def test_delete_node_removes_its_health(store: Store) -> None:
    for node_id in ("n1", "n2"):
        await store.create_node(NodeRecord(id=node_id, name=node_id, owner="u1"))
        await store.append_node_health(health(node_id, 1), keep=3)
    await store.delete_node("n1")
    assert await store.read_node_health("n1", 10) == []
    assert len(await store.read_node_health("n2", 10)) == 1


# ---------------------------------------------------------------- reconciliation queue


async def test_jobs_to_reconcile(store: Store) -> None:
    now = at(60)
    await store.create_job(job("ready", created_at=at(1)))
    await store.create_job(job("running-later", state="running", next_check_at=at(120)))
    await store.create_job(job("running-due", state="running", next_check_at=at(30)))
    await store.create_job(job("done", state="completed", created_at=at(2)))
    await store.create_job(job("failed-due", state="failed", next_check_at=now))
    await store.create_job(job("terminated-later", state="terminated", next_check_at=at(61)))

    jobs = await store.jobs_to_reconcile(now)
    assert [j.id for j in jobs] == ["running-due", "failed-due", "running-later", "ready"]
    due = await store.jobs_to_reconcile(now, due_only=True)
    assert [j.id for j in due] == ["running-due", "failed-due"]

    # a terminal job with no timer drops out of the queue once its check is done
    failed = await store.get_job("failed-due")
    await store.cas_job("failed-due", failed.version, {"next_check_at": None})
    assert "failed-due" not in {j.id for j in await store.jobs_to_reconcile(now)}


# ---------------------------------------------------------------- persistence and URIs


async def test_sqlite_file_keeps_everything_across_reopen(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'data' / 'flame.db'}"
    store = await open_store(uri)
    await store.create_job(job("j1"))
    moved = await store.cas_job(
        "j1", 0, {"state": "starting"}, TransitionRecord(from_state="ready", to_state="starting")
    )
    key = await store.put_blob(b"zip bytes")
    await store.append_logs([LogLineRecord(job_id="j1", task_id="t", line="x")])
    await store.close()

    reopened = await open_store(uri)
    try:
        assert await reopened.get_job("j1") == moved
        assert await reopened.get_blob(key) == b"zip bytes"
        assert await reopened.append_logs([LogLineRecord(job_id="j1", task_id="t", line="y")]) == 2
        await reopened.ping()
    finally:
        await reopened.close()
    assert (tmp_path / "data" / "flame.db.blobs").is_dir()


async def test_sqlite_refuses_a_newer_schema(tmp_path: Path) -> None:
    db = tmp_path / "flame.db"
    store = await open_store(f"sqlite:///{db}")
    await store.create_user(UserRecord(id="u1", name="alice"))
    await store.close()
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA user_version=99")
    with pytest.raises(FailedPrecondition, match="newer"):
        await open_store(f"sqlite:///{db}")


@pytest.mark.parametrize(
    ("uri", "blob_dir"),
    [
        ("postgres://localhost/flame", None),
        ("sqlite://relative.db", None),
        ("mongodb://localhost/flame", None),
    ],
)
async def test_open_store_refuses_bad_uris(uri: str, blob_dir: str | None) -> None:
    with pytest.raises(InvalidArgument):
        await open_store(uri, blob_dir)


async def test_ping(store: Store) -> None:
    await store.ping()
    await store.close()
    await store.close()  # closing twice is harmless (the fixture closes it again)


async def test_timestamps_are_utc_milliseconds_everywhere(store: Store) -> None:
    paris = timezone(timedelta(hours=2))
    local = datetime(2026, 6, 1, 14, 30, 0, 987654, tzinfo=paris)
    rec = job("j1", created_at=local, deadline=local + timedelta(hours=1))
    assert rec.created_at == datetime(2026, 6, 1, 12, 30, 0, 987000, tzinfo=UTC)
    assert rec.created_at.utcoffset() == timedelta(0)
    await store.create_job(rec)
    stored = await store.get_job("j1")
    assert stored == rec
    assert stored.deadline is not None and stored.deadline.tzinfo is not None
    assert stored.deadline.utcoffset() == timedelta(0)
    with pytest.raises(ValueError, match="timezone-aware"):
        job("j2", created_at=datetime(2026, 6, 1, 12, 0))


OWNERS = ["alice", "bob", "carol"]
PROJECTS = ["", "p1", "p2"]
job_rows = st.lists(
    st.tuples(st.sampled_from(OWNERS), st.sampled_from(PROJECTS), st.integers(0, 3)),
    max_size=14,
)
id_filter = st.none() | st.lists(st.sampled_from(OWNERS), unique=True)
project_filter = st.none() | st.lists(st.sampled_from(PROJECTS), unique=True)


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(rows=job_rows, owners=id_filter, project_ids=project_filter, size=st.integers(1, 5))
def test_list_matches_a_reference_model(
    fresh_store: Callable[[Path], AbstractAsyncContextManager[Store]],
    tmp_path: Path,
    rows: list[tuple[str, str, int]],
    owners: list[str] | None,
    project_ids: list[str] | None,
    size: int,
) -> None:
    """Visibility filter + pagination agree with a plain-Python model on random data."""
    jobs = [
        job(f"j{n:02d}", owner=o, project_id=p, created_at=at(t))
        for n, (o, p, t) in enumerate(rows)
    ]

    def visible(j: JobRecord) -> bool:
        if owners is None and project_ids is None:
            return True
        return (owners is not None and j.owner in owners) or (
            project_ids is not None and j.project_id != "" and j.project_id in project_ids
        )

    expected = [j.id for j in sorted(jobs, key=lambda j: (j.created_at, j.id)) if visible(j)]

    async def run() -> list[str]:
        work = tmp_path / uuid.uuid4().hex
        work.mkdir()
        async with fresh_store(work) as store:
            for j in jobs:
                await store.create_job(j)
            seen: list[str] = []
            cursor: str | None = None
            while True:
                page = await store.list_jobs(
                    owners=owners, project_ids=project_ids, limit=size, after=cursor
                )
                seen.extend(j.id for j in page.items)
                if (cursor := page.next_cursor) is None:
                    return seen

    assert asyncio.run(run()) == expected


# ---------------------------------------------------------------- idempotency keys


def idem(
    key_id: str, fingerprint: str = "f1", *, created: float = 0, ttl: float = 86400
) -> IdempotencyRecord:
    return IdempotencyRecord(
        id=key_id,
        call="CreateJob",
        fingerprint=fingerprint,
        seed="00" * 32,
        created_at=at(created),
        expires_at=at(created + ttl),
    )


async def test_the_first_claim_of_a_key_wins_and_later_ones_see_it(store: Store) -> None:
    first = idem("k1", "f1")
    assert await store.claim_idempotency_key(first) == first
    # a retry (same or different request) gets the earlier record, unchanged
    again = await store.claim_idempotency_key(idem("k1", "f2", created=5))
    assert again == first
    done = await store.complete_idempotency_key(
        "k1", "cmVzcG9uc2U=", secret_field="token", secret_index=2, secret_kind="user"
    )
    assert (done.response, done.secret_field, done.secret_index, done.secret_kind) == (
        "cmVzcG9uc2U=",
        "token",
        2,
        "user",
    )
    assert await store.claim_idempotency_key(idem("k1", "f3", created=10)) == done
    other = idem("k2", "f1")
    assert await store.claim_idempotency_key(other) == other  # keys do not interfere


async def test_concurrent_claims_of_one_key_agree_on_one_winner(store: Store) -> None:
    claims = [idem("k1", f"f{i}") for i in range(8)]
    got = await asyncio.gather(*(store.claim_idempotency_key(c) for c in claims))
    assert len({g.fingerprint for g in got}) == 1
    assert got[0] in claims


async def test_an_expired_key_is_free_again_and_purged(store: Store) -> None:
    await store.claim_idempotency_key(idem("old", "f1", created=0, ttl=100))
    await store.claim_idempotency_key(idem("live", "f1", created=0, ttl=1000))
    # at t=100 "old" has expired: a new claim replaces it
    fresh = idem("old", "f2", created=100)
    assert await store.claim_idempotency_key(fresh) == fresh
    await store.claim_idempotency_key(idem("gone", "f1", created=0, ttl=50))
    assert await store.purge_idempotency_keys(at(60)) == 1  # only "gone" expired by t=60
    assert (await store.claim_idempotency_key(idem("live", "f9", created=60))).fingerprint == "f1"
    with pytest.raises(NotFound):
        await store.complete_idempotency_key("gone", "eA==")


# ---------------------------------------------------------------- cancelled writes


async def test_a_write_cancelled_at_any_point_is_all_or_nothing_and_the_store_stays_usable(
    store: Store,
) -> None:
    # A caller that goes away mid-request (the apiserver killed: gRPC cancels the handler)
    # cancels the write wherever it is; the store must not be left inside a transaction.
    for steps in range(40):
        write = asyncio.ensure_future(
            store.create_project(ProjectRecord(id=f"c{steps}", name=f"c{steps}", owner="alice"))
        )
        for _ in range(steps):
            await asyncio.sleep(0)
        write.cancel()
        with suppress(asyncio.CancelledError):
            await write
        after = await store.create_project(
            ProjectRecord(id=f"after{steps}", name=f"after{steps}", owner="alice")
        )
        assert await store.get_project(after.id) == after
        try:
            kept = [await store.get_project(f"c{steps}")]
        except NotFound:
            kept = []
        assert len(kept) in (0, 1)  # written whole or not at all
