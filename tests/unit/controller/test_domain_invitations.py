"""Invitation rules against a real SQLite store: who may invite, one use, expiry, revocation,
new accounts are never admins, and the audit trail of the servicer is covered in e2e."""

from __future__ import annotations

import asyncio

import pytest

from flame_controller.domain import invitations, projects, tokens, users
from flame_controller.domain.context import Ctx
from flame_controller.store.base import Store
from flame_controller.store.records import utcnow
from flame_service.auth import Caller
from flame_service.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)

ADMIN = Caller("admin", "root")


@pytest.fixture
def ctx(store: Store) -> Ctx:
    return Ctx(store=store, apiserver_url="http://api:10100")


async def _user(ctx: Ctx, name: str) -> Caller:
    rec = await users.create_user(ctx, ADMIN, name=name, email="", admin=False)
    return Caller("user", rec.id)


async def test_owner_invites_and_a_new_person_joins_once(ctx: Ctx) -> None:
    alice = await _user(ctx, "alice")
    project = await projects.create_project(ctx, alice, name="p", description="")
    issued = await invitations.create_invitation(ctx, alice, project.id, ttl_seconds=0, note="bob")
    assert issued.secret.startswith("flm_invite_")
    assert issued.record.token_hash != issued.secret and issued.secret not in issued.record.note
    lifetime = issued.record.expires_at - issued.record.created_at
    assert abs(lifetime.total_seconds() - invitations.DEFAULT_TTL_SECONDS) < 5

    joined = await invitations.accept_invitation(
        ctx, None, issued.secret, name="bob", email="bob@example.org"
    )
    assert joined.user.name == "bob" and not joined.user.admin
    assert joined.token is not None and joined.project.members == [joined.user.id]
    bob = await tokens.authenticate(ctx, joined.token.secret)
    assert bob == Caller("user", joined.user.id)
    assert (await projects.get_project(ctx, bob, project.id)).id == project.id

    # the same link again, by a new person or a signed-in one: refused, nothing changes
    with pytest.raises(NotFound, match="not valid"):
        await invitations.accept_invitation(ctx, None, issued.secret, name="mallory", email="")
    carol = await _user(ctx, "carol")
    with pytest.raises(NotFound, match="not valid"):
        await invitations.accept_invitation(ctx, carol, issued.secret, name="", email="")
    with pytest.raises(NotFound):
        await ctx.store.get_user_by_name("mallory")
    assert (await ctx.store.get_project(project.id)).members == [joined.user.id]
    # the secret is no bearer token
    with pytest.raises(Exception, match="invalid token"):
        await tokens.authenticate(ctx, issued.secret)


async def test_a_signed_in_user_is_linked_not_recreated(ctx: Ctx) -> None:
    alice = await _user(ctx, "alice")
    carol = await _user(ctx, "carol")
    project = await projects.create_project(ctx, alice, name="p", description="")
    issued = await invitations.create_invitation(ctx, alice, project.id, ttl_seconds=0, note="")
    with pytest.raises(FailedPrecondition, match="already belong"):
        await invitations.accept_invitation(ctx, alice, issued.secret, name="", email="")
    joined = await invitations.accept_invitation(ctx, carol, issued.secret, name="x", email="")
    assert joined.user.id == carol.subject and joined.token is None
    assert joined.project.members == [carol.subject]
    stored = await ctx.store.get_invitation(issued.record.id)
    assert stored.used_by == carol.subject and stored.used_at is not None


async def test_only_the_owner_invites_lists_and_revokes(ctx: Ctx) -> None:
    alice = await _user(ctx, "alice")
    bob = await _user(ctx, "bob")
    stranger = await _user(ctx, "stranger")
    project = await projects.create_project(ctx, alice, name="p", description="")
    await projects.add_member(ctx, alice, project.id, bob.subject)
    with pytest.raises(PermissionDenied):
        await invitations.create_invitation(ctx, bob, project.id, ttl_seconds=0, note="")
    with pytest.raises(NotFound):
        await invitations.create_invitation(ctx, stranger, project.id, ttl_seconds=0, note="")
    issued = await invitations.create_invitation(ctx, alice, project.id, ttl_seconds=0, note="")
    with pytest.raises(NotFound):
        await invitations.list_invitations(ctx, stranger, project.id, limit=0, after="")
    with pytest.raises(NotFound):
        await invitations.revoke_invitation(ctx, stranger, issued.record.id)
    with pytest.raises(PermissionDenied):
        await invitations.revoke_invitation(ctx, bob, issued.record.id)
    listed = await invitations.list_invitations(ctx, alice, project.id, limit=0, after="")
    assert [i.id for i in listed.items] == [issued.record.id]

    revoked = await invitations.revoke_invitation(ctx, alice, issued.record.id)
    assert revoked.revoked
    with pytest.raises(NotFound, match="not valid"):
        await invitations.accept_invitation(ctx, None, issued.secret, name="eve", email="")


async def test_lifetime_is_bounded_and_an_expired_link_is_refused(ctx: Ctx) -> None:
    alice = await _user(ctx, "alice")
    project = await projects.create_project(ctx, alice, name="p", description="")
    for ttl in (-1, 30, invitations.MAX_TTL_SECONDS + 1):
        with pytest.raises(InvalidArgument):
            await invitations.create_invitation(ctx, alice, project.id, ttl_seconds=ttl, note="")
    issued = await invitations.create_invitation(ctx, alice, project.id, ttl_seconds=60, note="")
    await ctx.store.cas_invitation(issued.record.id, 0, {"expires_at": utcnow()})
    with pytest.raises(NotFound, match="not valid"):
        await invitations.accept_invitation(ctx, None, issued.secret, name="late", email="")


async def test_a_taken_name_gives_the_link_back_and_bad_names_are_refused(ctx: Ctx) -> None:
    alice = await _user(ctx, "alice")
    project = await projects.create_project(ctx, alice, name="p", description="")
    issued = await invitations.create_invitation(ctx, alice, project.id, ttl_seconds=0, note="")
    with pytest.raises(AlreadyExists):
        await invitations.accept_invitation(ctx, None, issued.secret, name="alice", email="")
    with pytest.raises(InvalidArgument):
        await invitations.accept_invitation(ctx, None, issued.secret, name="../root", email="")
    joined = await invitations.accept_invitation(ctx, None, issued.secret, name="dan", email="")
    assert joined.user.name == "dan"


async def test_two_people_opening_one_link_at_once_join_exactly_one(ctx: Ctx) -> None:
    alice = await _user(ctx, "alice")
    project = await projects.create_project(ctx, alice, name="p", description="")
    issued = await invitations.create_invitation(ctx, alice, project.id, ttl_seconds=0, note="")

    async def open_link(name: str) -> str | None:
        try:
            joined = await invitations.accept_invitation(
                ctx, None, issued.secret, name=name, email=""
            )
        except NotFound:
            return None
        return joined.user.id

    results = await asyncio.gather(*(open_link(f"p{n}") for n in range(8)))
    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    assert (await ctx.store.get_project(project.id)).members == winners


async def test_deleting_a_project_deletes_its_invitations(ctx: Ctx) -> None:
    alice = await _user(ctx, "alice")
    project = await projects.create_project(ctx, alice, name="p", description="")
    issued = await invitations.create_invitation(ctx, alice, project.id, ttl_seconds=0, note="")
    await projects.delete_project(ctx, alice, project.id)
    with pytest.raises(NotFound):
        await ctx.store.get_invitation(issued.record.id)
