"""First start: make sure there is an admin who can log in."""

from __future__ import annotations

import contextlib

import structlog

from flame_service.auth import hash_token
from flame_service.errors import AlreadyExists, NotFound

from .domain.context import Ctx
from .domain.tokens import issue
from .store.base import Store
from .store.records import TokenRecord, UserRecord, new_id

log = structlog.get_logger(__name__)
ADMIN_NAME = "admin"


async def bootstrap_admin(store: Store, admin_token: str | None) -> str | None:
    """With no users yet, create user ``admin`` (admin=True) and give it a token: ``admin_token``
    when set (only its hash is stored), else a generated one, which is returned (the server
    writes it to a private file; it is never printed or logged).

    On later starts a configured ``admin_token`` that is not stored yet (a rotated secret) is
    added to the ``admin`` user.  Returns the generated token, or None."""
    users, _ = await store.list_users(limit=1)
    if users:
        if admin_token:
            await _ensure_configured_token(store, admin_token)
        return None
    try:
        admin = await store.create_user(UserRecord(id=new_id(), name=ADMIN_NAME, admin=True))
    except AlreadyExists:  # another controller raced us to it
        return None
    log.info("bootstrap.admin_created", user_id=admin.id)
    if admin_token:
        await _store_token(store, admin.id, admin_token)
        return None
    issued = await issue(
        Ctx(store=store), kind="api", scope="user", subject=admin.id, description="bootstrap"
    )
    return issued.secret


async def _store_token(store: Store, user_id: str, secret: str) -> None:
    record = TokenRecord(
        id=new_id(),
        kind="api",
        scope="user",
        subject=user_id,
        token_hash=hash_token(secret),
        description="bootstrap (configured)",
    )
    with contextlib.suppress(AlreadyExists):
        await store.create_token(record)


async def _ensure_configured_token(store: Store, secret: str) -> None:
    try:
        await store.get_token_by_hash(hash_token(secret))
        return
    except NotFound:
        pass
    try:
        admin = await store.get_user_by_name(ADMIN_NAME)
    except NotFound:
        log.warning("bootstrap.admin_token_ignored", reason="no user named admin")
        return
    if not admin.admin:
        log.warning("bootstrap.admin_token_ignored", reason="user admin is not an admin")
        return
    await _store_token(store, admin.id, secret)
    log.info("bootstrap.admin_token_added", user_id=admin.id)
