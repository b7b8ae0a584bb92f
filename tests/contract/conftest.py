"""Fixtures shared by the contract suites: a ``store`` opened on every backend."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import pytest

from flame_controller.store import Store, open_store

MONGO_URI_ENV = "FLAME_TEST_MONGODB_URI"
STORE_BACKENDS = ["sqlite-memory", "sqlite-file", "mongo", "mongo-real"]


async def open_backend(backend: str, tmp_path: Path) -> Store:
    """A fresh, empty store on ``backend``; skips ``mongo-real`` without a server."""
    blob_dir = str(tmp_path / "blobs")
    if backend == "sqlite-memory":
        return await open_store("sqlite://:memory:")
    if backend == "sqlite-file":
        return await open_store(f"sqlite:///{tmp_path / 'flame.db'}", blob_dir)
    if backend == "mongo":
        from mongomock_motor import AsyncMongoMockClient

        return await open_store(
            "mongodb://localhost/flame_test", blob_dir, client=AsyncMongoMockClient()
        )
    if backend == "mongo-real":
        uri = os.environ.get(MONGO_URI_ENV)
        if not uri:
            pytest.skip(f"set {MONGO_URI_ENV} to run the store contract against a real MongoDB")
        from motor.motor_asyncio import AsyncIOMotorClient

        client = AsyncIOMotorClient(uri, tz_aware=True)
        database = f"flame_test_{uuid.uuid4().hex[:12]}"
        store = await open_store(f"mongodb://localhost/{database}", blob_dir, client=client)
        _REAL_CLIENTS[id(store)] = (client, database)
        return store
    raise ValueError(backend)


_REAL_CLIENTS: dict[int, tuple[object, str]] = {}


async def close_backend(store: Store) -> None:
    await store.close()
    real = _REAL_CLIENTS.pop(id(store), None)
    if real is not None:
        client, database = real
        await client.drop_database(database)  # type: ignore[attr-defined]
        client.close()  # type: ignore[attr-defined]


@pytest.fixture(params=STORE_BACKENDS)
def store_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


StoreOpener = Callable[[Path], AbstractAsyncContextManager[Store]]


@pytest.fixture
def fresh_store(store_backend: str) -> StoreOpener:
    """``async with fresh_store(workdir) as store:`` — a new empty store on this backend (for
    tests that need several, e.g. one per hypothesis example)."""

    @asynccontextmanager
    async def opener(workdir: Path) -> AsyncIterator[Store]:
        opened = await open_backend(store_backend, workdir)
        try:
            yield opened
        finally:
            await close_backend(opened)

    return opener


@pytest.fixture
async def store(store_backend: str, tmp_path: Path) -> AsyncIterator[Store]:
    opened = await open_backend(store_backend, tmp_path)
    try:
        yield opened
    finally:
        await close_backend(opened)
