"""Domain rules against a real SQLite store: bootstrap, tokens, admins, jobs, code, paging."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

import pytest

from flame_controller.bootstrap import bootstrap_admin
from flame_controller.domain import code, datasets, designs, jobs, nodes, tokens, users
from flame_controller.domain.context import Ctx
from flame_controller.store.base import Store
from flame_controller.store.records import JobRecord
from flame_service.auth import Caller, hash_token
from flame_service.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
)

from .conftest import central_code, design_json, make_zip

ADMIN = Caller("admin", "root")


@pytest.fixture
def ctx(store: Store) -> Ctx:
    return Ctx(store=store, apiserver_url="http://api:10100")


async def _user(ctx: Ctx, name: str) -> Caller:
    rec = await users.create_user(ctx, ADMIN, name=name, email="", admin=False)
    return Caller("user", rec.id)


def _printed_tokens(capsys: pytest.CaptureFixture[str]) -> list[str]:
    out = capsys.readouterr().out
    return [line for line in out.splitlines() if line.startswith("FLAME_ADMIN_TOKEN")]


async def test_bootstrap_creates_one_admin_and_never_prints_the_token(
    store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    ctx = Ctx(store=store)
    token = await bootstrap_admin(store, None)
    assert token is not None
    assert token not in capsys.readouterr().out
    caller = await tokens.authenticate(ctx, token)
    assert caller.scope == "admin"
    assert await bootstrap_admin(store, None) is None
    assert _printed_tokens(capsys) == []
    listed = await users.list_users(ctx, caller, limit=0, after="")
    assert [u.name for u in listed.items] == ["admin"]


async def test_bootstrap_with_a_configured_token_stores_only_its_hash(
    store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await bootstrap_admin(store, "flm_user_configured") is None
    assert _printed_tokens(capsys) == []
    record = await store.get_token_by_hash(hash_token("flm_user_configured"))
    assert record.token_hash != "flm_user_configured"
    assert (await tokens.authenticate(Ctx(store=store), "flm_user_configured")).scope == "admin"
    # A rotated secret given on a later start is added to the admin.
    await bootstrap_admin(store, "flm_user_rotated")
    assert (await tokens.authenticate(Ctx(store=store), "flm_user_rotated")).scope == "admin"


async def test_expired_revoked_and_enrolment_tokens_do_not_authenticate(ctx: Ctx) -> None:
    alice = await _user(ctx, "alice")
    issued = await tokens.create_token(
        ctx, alice, user_id=alice.subject, description="", ttl_seconds=60
    )
    assert await tokens.authenticate(ctx, issued.secret) == alice
    await ctx.store.update_token(
        issued.record.id, {"expires_at": issued.record.created_at - timedelta(seconds=1)}
    )
    with pytest.raises(Unauthenticated, match="expired"):
        await tokens.authenticate(ctx, issued.secret)
    created = await nodes.create_node(ctx, alice, name="n", project_id="", labels={})
    with pytest.raises(Unauthenticated, match="enrol"):
        await tokens.authenticate(ctx, created.secret)
    with pytest.raises(Unauthenticated):
        await tokens.authenticate(ctx, "")


async def test_an_enrolment_token_is_consumed_by_exactly_one_of_two_racing_enrolments(
    ctx: Ctx,
) -> None:
    alice = await _user(ctx, "alice")
    created = await nodes.create_node(ctx, alice, name="n", project_id="", labels={"gpu": "1"})
    results = await asyncio.gather(
        *(nodes.enroll_node(ctx, enrolment_token=created.secret, facts={}) for _ in range(2)),
        return_exceptions=True,
    )
    ok = [r for r in results if not isinstance(r, BaseException)]
    assert len(ok) == 1 and isinstance(ok[0].secret, str)
    assert [type(r) for r in results if isinstance(r, BaseException)] == [Unauthenticated]


async def test_admin_rules(ctx: Ctx) -> None:
    token = await bootstrap_admin(ctx.store, None)
    assert token is not None
    admin = await tokens.authenticate(ctx, token)
    alice = await _user(ctx, "alice")
    with pytest.raises(PermissionDenied):
        await users.create_user(ctx, alice, name="bob", email="", admin=False)
    with pytest.raises(PermissionDenied, match="admin flag"):
        await users.update_user(ctx, alice, alice.subject, email=None, admin=True)
    updated = await users.update_user(ctx, alice, alice.subject, email="a@b.c", admin=None)
    assert updated.email == "a@b.c"
    with pytest.raises(InvalidArgument, match="email"):
        await users.update_user(ctx, alice, alice.subject, email="nope", admin=None)
    with pytest.raises(FailedPrecondition, match="last admin"):
        await users.delete_user(ctx, admin, admin.subject)
    with pytest.raises(FailedPrecondition, match="last admin"):
        await users.update_user(ctx, admin, admin.subject, email=None, admin=False)
    issued = await tokens.create_token(
        ctx, alice, user_id=alice.subject, description="", ttl_seconds=0
    )
    await users.delete_user(ctx, admin, alice.subject)
    with pytest.raises(Unauthenticated):
        await tokens.authenticate(ctx, issued.secret)
    with pytest.raises(NotFound):
        await users.get_user(ctx, admin, alice.subject)


async def _job_setup(ctx: Ctx, alice: Caller) -> tuple[str, list[str]]:
    node = await nodes.create_node(ctx, alice, name="n", project_id="", labels={})
    ids = []
    for i in range(3):
        ds = await datasets.create_dataset(
            ctx,
            alice,
            name=f"d{i}",
            project_id="",
            node_id=node.node.id,
            realm="",
            format="",
            size_bytes=0,
            uri="",
            description="",
        )
        ids.append(ds.id)
    design = await designs.create_design(
        ctx, alice, name="central", project_id="", description="", schema_json=design_json()
    )
    await code.push_code(ctx, alice, design_id=design.id, data=central_code())
    return design.id, ids


async def _new_job(
    ctx: Ctx,
    alice: Caller,
    design_id: str,
    ds: list[str],
    *,
    name: str = "j",
    code_version: int = 0,
) -> JobRecord:
    spec = json.dumps({"datasets": {"default": ds}})
    return await jobs.create_job(
        ctx,
        alice,
        name=name,
        project_id="",
        design_id=design_id,
        code_version=code_version,
        spec_json=spec,
    )


async def test_a_user_with_a_job_in_progress_cannot_be_deleted(ctx: Ctx) -> None:
    alice = await _user(ctx, "alice")
    design_id, ds = await _job_setup(ctx, alice)
    job = await _new_job(ctx, alice, design_id, ds)
    await jobs.start_job(ctx, alice, job.id)
    with pytest.raises(FailedPrecondition, match=f"1 job.*{job.id}.*stop them"):
        await users.delete_user(ctx, ADMIN, alice.subject)
    assert (await users.get_user(ctx, ADMIN, alice.subject)).name == "alice"  # nothing changed
    assert (await jobs.get_job(ctx, alice, job.id)).desired_state == "running"
    await jobs.stop_job(ctx, alice, job.id)  # never started: stopping it ends the request
    await users.delete_user(ctx, ADMIN, alice.subject)
    with pytest.raises(NotFound):
        await users.get_user(ctx, ADMIN, alice.subject)


async def test_update_job_rebuilds_its_tasks_while_ready(ctx: Ctx) -> None:
    alice = await _user(ctx, "alice")
    design_id, ds = await _job_setup(ctx, alice)
    job = await _new_job(ctx, alice, design_id, ds)
    assert len(await jobs.list_tasks(ctx, alice, job.id)) == 4
    updated = await jobs.update_job(
        ctx,
        alice,
        job.id,
        spec_json=json.dumps({"datasets": {"default": ds[:1]}, "rounds": 3}),
        code_version=None,
    )
    assert updated.id == job.id and updated.spec["rounds"] == 3
    assert updated.created_at == job.created_at
    tasks = await jobs.list_tasks(ctx, alice, job.id)
    assert sorted(t.role for t in tasks) == ["aggregator", "trainer"]
    with pytest.raises(InvalidArgument, match="unknown dataset"):
        await jobs.update_job(
            ctx,
            alice,
            job.id,
            spec_json=json.dumps({"datasets": {"default": ["zzz"]}}),
            code_version=None,
        )
    assert (await jobs.get_job(ctx, alice, job.id)).spec["rounds"] == 3
    await jobs.start_job(ctx, alice, job.id)
    with pytest.raises(FailedPrecondition, match="only a job that is ready"):
        await jobs.update_job(ctx, alice, job.id, spec_json="{}", code_version=None)


async def test_an_update_cut_short_loses_nothing_and_start_finishes_it(
    ctx: Ctx, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = await _user(ctx, "alice")
    design_id, ds = await _job_setup(ctx, alice)
    job = await _new_job(ctx, alice, design_id, ds)
    store = ctx.store
    replace = store.replace_tasks

    async def crash_half_way(job_id: str, tasks: Any) -> Any:
        await replace(job_id, tasks[:1])  # the old tasks are gone, the new ones half stored
        raise RuntimeError("controller killed")

    monkeypatch.setattr(store, "replace_tasks", crash_half_way)
    new_spec = json.dumps({"datasets": {"default": ds[:2]}, "rounds": 3})
    with pytest.raises(RuntimeError):
        await jobs.update_job(ctx, alice, job.id, spec_json=new_spec, code_version=None)
    monkeypatch.setattr(store, "replace_tasks", replace)

    kept = await jobs.get_job(ctx, alice, job.id)  # the job survived, with the update's spec
    assert kept.created_at == job.created_at and kept.spec["rounds"] == 3
    assert kept.replan is not None and len(kept.replan) == 3
    assert len(await jobs.list_tasks(ctx, alice, job.id)) == 1

    started = await jobs.start_job(ctx, alice, job.id)
    assert started.desired_state == "running" and started.replan is None
    tasks = await jobs.list_tasks(ctx, alice, job.id)
    assert {t.id for t in tasks} == {t.id for t in kept.replan}
    assert sorted(t.dataset_id for t in tasks if t.role == "trainer") == sorted(ds[:2])


async def test_an_update_racing_a_start_either_lands_before_it_or_is_refused(ctx: Ctx) -> None:
    alice = await _user(ctx, "alice")
    design_id, ds = await _job_setup(ctx, alice)
    for attempt in range(6):
        job = await _new_job(ctx, alice, design_id, ds, name=f"race-{attempt}")
        smaller = json.dumps({"datasets": {"default": ds[:1]}})
        update = jobs.update_job(ctx, alice, job.id, spec_json=smaller, code_version=None)
        start = jobs.start_job(ctx, alice, job.id)
        pair = (update, start) if attempt % 2 else (start, update)
        outcomes = await asyncio.gather(*pair, return_exceptions=True)
        final = await jobs.get_job(ctx, alice, job.id)
        tasks = await jobs.list_tasks(ctx, alice, job.id)
        assert final.desired_state == "running" and final.replan is None
        refused = [o for o in outcomes if isinstance(o, Exception)]
        if refused:  # the start came first: the update changed nothing
            assert len(refused) == 1 and isinstance(refused[0], FailedPrecondition)
            assert len(tasks) == 4 and final.spec["datasets"]["default"] == ds
        else:  # the update came first: the job starts with the new task set
            assert len(tasks) == 2 and final.spec["datasets"]["default"] == ds[:1]


async def test_a_repeated_update_finishes_one_cut_short(
    ctx: Ctx, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = await _user(ctx, "alice")
    design_id, ds = await _job_setup(ctx, alice)
    job = await _new_job(ctx, alice, design_id, ds)

    async def crash(job_id: str, tasks: Any) -> Any:
        raise RuntimeError("controller killed")

    monkeypatch.setattr(ctx.store, "replace_tasks", crash)
    with pytest.raises(RuntimeError):
        await jobs.update_job(
            ctx,
            alice,
            job.id,
            spec_json=json.dumps({"datasets": {"default": ds[:1]}}),
            code_version=None,
        )
    monkeypatch.undo()
    done = await jobs.update_job(ctx, alice, job.id, spec_json=None, code_version=None)
    assert done.replan is None
    assert len(await jobs.list_tasks(ctx, alice, job.id)) == 2  # aggregator + 1 trainer


async def test_start_and_stop_follow_the_job_state(ctx: Ctx) -> None:
    kicked: list[str] = []
    ctx = Ctx(store=ctx.store, kick=kicked.append)
    alice = await _user(ctx, "alice")
    design_id, ds = await _job_setup(ctx, alice)
    job = await _new_job(ctx, alice, design_id, ds)
    started = await jobs.start_job(ctx, alice, job.id)
    assert started.desired_state == "running" and "start requested" in started.reason
    assert (await jobs.start_job(ctx, alice, job.id)).version == started.version
    ended = await ctx.store.cas_job(job.id, started.version, {"state": "completed"})
    with pytest.raises(FailedPrecondition, match="already ended"):
        await jobs.stop_job(ctx, alice, job.id)
    # starting a finished job again is refused (a new run is a new job), and changes nothing
    with pytest.raises(FailedPrecondition, match=r"already ended \(completed\)"):
        await jobs.start_job(ctx, alice, job.id)
    assert (await jobs.get_job(ctx, alice, job.id)).version == ended.version
    assert kicked == [job.id]
    await jobs.delete_job(ctx, alice, job.id)


async def test_code_and_designs_in_use_cannot_be_deleted(ctx: Ctx) -> None:
    alice = await _user(ctx, "alice")
    design_id, ds = await _job_setup(ctx, alice)
    v2 = await code.push_code(
        ctx,
        alice,
        design_id=design_id,
        data=make_zip({"trainer/main.py": "v2", "aggregator/main.py": "v2"}),
    )
    job = await _new_job(ctx, alice, design_id, ds, code_version=1)
    with pytest.raises(FailedPrecondition, match="used by job"):
        await code.delete_code(ctx, alice, design_id=design_id, version=1)
    with pytest.raises(FailedPrecondition, match="used by job"):
        await designs.delete_design(ctx, alice, design_id)
    await code.delete_code(ctx, alice, design_id=design_id, version=2)
    with pytest.raises(NotFound):
        await ctx.store.get_blob(v2.blob_key)
    assert [c.version for c in await code.list_code(ctx, alice, design_id=design_id)] == [1]
    await jobs.delete_job(ctx, alice, job.id)
    await designs.delete_design(ctx, alice, design_id)
    with pytest.raises(NotFound):
        await designs.get_design(ctx, alice, design_id)


async def test_schema_update_bumps_the_design_version_and_jobs_check_code_roles(ctx: Ctx) -> None:
    alice = await _user(ctx, "alice")
    design_id, ds = await _job_setup(ctx, alice)
    schema = json.loads(design_json())
    schema["roles"].append({"name": "coordinator"})
    updated = await designs.update_design(
        ctx, alice, design_id, description=None, schema_json=json.dumps(schema)
    )
    assert updated.version == 2
    with pytest.raises(InvalidArgument, match="no folder for role"):
        await _new_job(ctx, alice, design_id, ds)


async def test_lists_page_through_every_item_once(ctx: Ctx) -> None:
    alice = await _user(ctx, "alice")
    for i in range(7):
        await designs.create_design(
            ctx, alice, name=f"d{i}", project_id="", description="", schema_json=design_json()
        )
    seen: list[str] = []
    after = ""
    while True:
        page = await designs.list_designs(ctx, alice, project_id="", limit=3, after=after)
        assert len(page.items) <= 3
        seen.extend(d.name for d in page.items)
        if not page.next_page_token:
            break
        after = page.next_page_token
    assert sorted(seen) == [f"d{i}" for i in range(7)]


async def test_nodes_and_datasets_feeding_unfinished_tasks_cannot_be_deleted(ctx: Ctx) -> None:
    alice = await _user(ctx, "alice")
    design_id, ds = await _job_setup(ctx, alice)
    job = await _new_job(ctx, alice, design_id, ds[:2])
    node_id = (await datasets.get_dataset(ctx, alice, ds[0])).node_id
    with pytest.raises(FailedPrecondition, match="unfinished tasks"):
        await nodes.delete_node(ctx, alice, node_id)
    with pytest.raises(FailedPrecondition, match="unfinished task"):
        await datasets.delete_dataset(ctx, alice, ds[0])
    await datasets.delete_dataset(ctx, alice, ds[2])  # not used by the job
    await jobs.delete_job(ctx, alice, job.id)
    await datasets.delete_dataset(ctx, alice, ds[0])
    await nodes.delete_node(ctx, alice, node_id)
    with pytest.raises(NotFound):
        await nodes.get_node(ctx, alice, node_id)


async def test_node_labels_revocation_and_enrolment(ctx: Ctx) -> None:
    alice = await _user(ctx, "alice")
    created = await nodes.create_node(ctx, alice, name="n", project_id="", labels={"gpu": "1"})
    merged = await nodes.update_node(
        ctx, alice, created.node.id, labels={"zone": "eu"}, replace=False
    )
    assert merged.labels == {"gpu": "1", "zone": "eu"}
    replaced = await nodes.update_node(ctx, alice, created.node.id, labels={"a": "b"}, replace=True)
    assert replaced.labels == {"a": "b"}
    with pytest.raises(InvalidArgument, match="label"):
        await nodes.update_node(ctx, alice, created.node.id, labels={"": "x"}, replace=False)
    with pytest.raises(InvalidArgument, match="facts"):
        await nodes.enroll_node(ctx, enrolment_token=created.secret, facts={"k": "v" * 2000})
    enrolled = await nodes.enroll_node(ctx, enrolment_token=created.secret, facts={"cpus": "2"})
    assert enrolled.node.enrolled and enrolled.node.facts == {"cpus": "2"}
    revoked = await nodes.revoke_node_token(ctx, alice, created.node.id)
    assert revoked.revoked
    with pytest.raises(Unauthenticated, match="revoked"):
        await tokens.authenticate(ctx, enrolled.secret)
    # A fresh node's enrolment token is useless once that node is revoked.
    fresh = await nodes.create_node(ctx, alice, name="m", project_id="", labels={})
    await nodes.revoke_node_token(ctx, alice, fresh.node.id)
    with pytest.raises(Unauthenticated):
        await nodes.enroll_node(ctx, enrolment_token=fresh.secret, facts={})
