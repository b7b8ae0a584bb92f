"""``open_store(uri)``: pick and open a backend by URI scheme."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import structlog

from flame_controller.store.base import LogRetention, Store
from flame_controller.store.blobs import BlobStore, FileBlobStore, MemoryBlobStore
from flame_service.errors import InvalidArgument

log = structlog.get_logger(__name__)

MEMORY_URI = "sqlite://:memory:"
DEFAULT_MONGO_DATABASE = "flame"


async def open_store(
    uri: str,
    blob_dir: str | None = None,
    *,
    client: Any = None,
    log_retention: LogRetention | None = None,
) -> Store:
    store = await _open(uri, blob_dir, client=client)
    if log_retention is not None:
        store.log_retention = log_retention
    return store


async def _open(uri: str, blob_dir: str | None = None, *, client: Any = None) -> Store:
    """Open the store at ``uri``.

    * ``sqlite:///abs/path.db`` — SQLite file; blobs in ``blob_dir`` (default
      ``/abs/path.db.blobs``).
    * ``sqlite://:memory:`` — SQLite in memory (tests); blobs in memory unless ``blob_dir``.
    * ``mongodb://host/db`` or ``mongodb+srv://…`` — MongoDB through motor (database from the
      URI path, default ``flame``); ``blob_dir`` is required.  ``client`` injects a ready client
      (e.g. mongomock-motor's ``AsyncMongoMockClient``), which ``close()`` then leaves open.
    """
    if uri == MEMORY_URI or uri == "sqlite:///:memory:":
        from flame_controller.store.sqlite import SqliteStore

        blobs: BlobStore = FileBlobStore(blob_dir) if blob_dir else MemoryBlobStore()
        store: Store = await SqliteStore.open(":memory:", blobs)
        log.info("store.opened", backend="sqlite", path=":memory:", blob_dir=blob_dir)
        return store
    if uri.startswith("sqlite:///"):
        from flame_controller.store.sqlite import SqliteStore

        path = Path(uri.removeprefix("sqlite://"))  # keeps the leading "/": always absolute
        path.parent.mkdir(parents=True, exist_ok=True)
        blob_dir = blob_dir or f"{path}.blobs"
        store = await SqliteStore.open(str(path), FileBlobStore(blob_dir))
        log.info("store.opened", backend="sqlite", path=str(path), blob_dir=blob_dir)
        return store
    if uri.startswith(("mongodb://", "mongodb+srv://")):
        from pymongo.uri_parser import parse_uri

        from flame_controller.store.mongo import MongoStore

        if not blob_dir:
            raise InvalidArgument("a MongoDB store needs blob_dir for code zips")
        database = parse_uri(uri).get("database") or DEFAULT_MONGO_DATABASE
        owns_client = client is None
        if client is None:
            from motor.motor_asyncio import AsyncIOMotorClient

            client = AsyncIOMotorClient(uri, tz_aware=True)
        store = await MongoStore.open(
            client, database, FileBlobStore(blob_dir), owns_client=owns_client
        )
        # never log the URI: it may carry credentials
        log.info("store.opened", backend="mongodb", database=database, blob_dir=blob_dir)
        return store
    raise InvalidArgument(
        f"unsupported store URI {uri!r} (want sqlite:///path, {MEMORY_URI} or mongodb://…)"
    )
