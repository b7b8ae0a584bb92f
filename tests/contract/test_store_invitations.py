"""The store contract for project invitations, on every backend (fixtures in conftest)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from flame_controller.store import Store
from flame_controller.store.records import InvitationRecord
from flame_service.errors import AlreadyExists, Conflict, InvalidArgument, NotFound

T0 = datetime(2026, 1, 1, 12, 0, 0, 123000, tzinfo=UTC)


def invitation(inv_id: str, project_id: str = "p1", **kw: object) -> InvitationRecord:
    fields: dict[str, object] = {
        "id": inv_id,
        "project_id": project_id,
        "owner": "alice",
        "token_hash": f"hash-{inv_id}",
        "expires_at": T0 + timedelta(hours=24),
        "created_at": T0,
    }
    fields.update(kw)
    return InvitationRecord.model_validate(fields)


async def test_invitation_round_trip_and_lookup_by_hash(store: Store) -> None:
    created = await store.create_invitation(invitation("i1", note="for bob"))
    assert await store.get_invitation("i1") == created
    assert await store.get_invitation_by_hash("hash-i1") == created
    with pytest.raises(NotFound):
        await store.get_invitation("nope")
    with pytest.raises(NotFound):
        await store.get_invitation_by_hash("hash-nope")


async def test_invitation_token_hashes_are_unique(store: Store) -> None:
    await store.create_invitation(invitation("i1"))
    with pytest.raises(AlreadyExists):
        await store.create_invitation(invitation("i2", token_hash="hash-i1"))
    with pytest.raises(AlreadyExists):
        await store.create_invitation(invitation("i1", token_hash="other"))


async def test_invitations_list_per_project_and_page(store: Store) -> None:
    for n in range(5):
        await store.create_invitation(invitation(f"a{n}", created_at=T0 + timedelta(seconds=n)))
    await store.create_invitation(invitation("b0", project_id="p2"))
    first = await store.list_invitations(project_id="p1", limit=3)
    assert [i.id for i in first.items] == ["a0", "a1", "a2"]
    assert first.next_cursor is not None
    rest = await store.list_invitations(project_id="p1", after=first.next_cursor)
    assert [i.id for i in rest.items] == ["a3", "a4"] and rest.next_cursor is None
    assert [i.id for i in (await store.list_invitations(project_id="p2")).items] == ["b0"]
    assert await store.delete_invitations("p1") == 5
    assert (await store.list_invitations(project_id="p1")).items == []
    assert (await store.get_invitation("b0")).project_id == "p2"


async def test_cas_invitation_bumps_version_and_refuses_stale_or_immutable(store: Store) -> None:
    await store.create_invitation(invitation("i1"))
    used = await store.cas_invitation("i1", 0, {"used_by": "bob", "used_at": T0})
    assert used.version == 1 and used.used_by == "bob" and used.used_at == T0
    with pytest.raises(Conflict):
        await store.cas_invitation("i1", 0, {"used_by": "mallory"})
    with pytest.raises(InvalidArgument):
        await store.cas_invitation("i1", 1, {"project_id": "p2"})
    with pytest.raises(NotFound):
        await store.cas_invitation("nope", 0, {"revoked": True})
    assert (await store.get_invitation("i1")).used_by == "bob"


async def test_concurrent_redeems_exactly_one_wins(store: Store) -> None:
    await store.create_invitation(invitation("i1"))

    async def redeem(user: str) -> str | None:
        try:
            await store.cas_invitation("i1", 0, {"used_by": user})
        except Conflict:
            return None
        return user

    results = await asyncio.gather(*(redeem(f"user{n}") for n in range(10)))
    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    assert (await store.get_invitation("i1")).used_by == winners[0]
