"""MongoDB backend (motor).  Every write is one atomic single-document operation.

Only the part of the API that motor's ``AsyncIOMotorClient`` shares with PyMongo's
``AsyncMongoClient`` is used (``find_one``, ``find().sort().limit()``, ``insert_one``,
``insert_many``, ``find_one_and_update``, ``delete_many``, ``create_index``, ``command``), so
swapping the client is one line in :func:`flame_controller.store.factory.open_store`.
Multi-document transactions are never needed (mongomock-motor and a standalone ``mongod``
have none).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from pymongo import ASCENDING, DESCENDING, ReturnDocument
from pymongo.errors import BulkWriteError, DuplicateKeyError, PyMongoError

from flame_controller.store.blobs import BlobStore
from flame_controller.store.documents import Doc, DocumentStore
from flame_controller.store.kinds import ALL_KINDS, Kind
from flame_controller.store.query import And, Cond, Contains, Eq, Gt, In, Lte, NotIn, Or
from flame_service.errors import AlreadyExists, Unavailable

DUPLICATE_KEY = 11000


def _field(name: str) -> str:
    return "_id" if name == "id" else name


def _filter(cond: Cond | None) -> dict[str, Any]:
    if cond is None:
        return {}
    if isinstance(cond, Eq | Contains):
        return {_field(cond.field): cond.value}
    if isinstance(cond, In):
        return {_field(cond.field): {"$in": list(cond.values)}}
    if isinstance(cond, NotIn):
        return {_field(cond.field): {"$nin": list(cond.values)}}
    if isinstance(cond, Gt):
        return {_field(cond.field): {"$gt": cond.value}}
    if isinstance(cond, Lte):
        return {_field(cond.field): {"$lte": cond.value}}
    if isinstance(cond, And):
        return {"$and": [_filter(c) for c in cond.conds]}
    if isinstance(cond, Or):
        return {"$or": [_filter(c) for c in cond.conds]}
    raise TypeError(f"unknown condition {cond!r}")


def _aware(value: Any) -> Any:
    """BSON dates come back naive unless the client is ``tz_aware``: they are UTC."""
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, dict):
        return {k: _aware(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_aware(v) for v in value]
    return value


def _doc(raw: dict[str, Any] | None) -> Doc | None:
    if raw is None:
        return None
    raw = dict(raw)
    raw.pop("_id", None)
    result: Doc = _aware(raw)
    return result


def _duplicate(kind: Kind, exc: Exception) -> AlreadyExists:
    return AlreadyExists(f"{kind.name}: a record with this id or name already exists ({exc})")


class MongoStore(DocumentStore):
    def __init__(self, client: Any, database: str, blobs: BlobStore, *, owns_client: bool) -> None:
        super().__init__(blobs)
        self._client = client
        self._db = client[database]
        self._owns_client = owns_client
        self._closed = False

    @classmethod
    async def open(
        cls, client: Any, database: str, blobs: BlobStore, *, owns_client: bool
    ) -> MongoStore:
        store = cls(client, database, blobs, owns_client=owns_client)
        await store._create_indexes()
        return store

    async def _create_indexes(self) -> None:
        for kind in ALL_KINDS:
            coll = self._db[kind.name]
            for group in kind.unique:
                await coll.create_index([(f, ASCENDING) for f in group], unique=True)
            for group in kind.indexes:
                await coll.create_index([(f, ASCENDING) for f in group])

    async def close(self) -> None:
        if self._owns_client and not self._closed:
            self._closed = True
            closing = self._client.close()  # motor: plain call; AsyncMongoClient: a coroutine
            if inspect.isawaitable(closing):
                await closing

    async def ping(self) -> None:
        try:
            await self._db.command("ping")
        except PyMongoError as exc:
            raise Unavailable(f"mongodb store unavailable: {exc}") from exc

    # ------------------------------------------------------------------ primitives
    async def _insert(self, kind: Kind, key: str, doc: Doc) -> None:
        try:
            await self._db[kind.name].insert_one({"_id": key, **doc})
        except DuplicateKeyError as exc:
            raise _duplicate(kind, exc) from exc

    async def _insert_missing(self, kind: Kind, items: Sequence[tuple[str, Doc]]) -> None:
        if not items:
            return
        try:
            await self._db[kind.name].insert_many(
                [{"_id": key, **doc} for key, doc in items], ordered=False
            )
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            if any(e.get("code") != DUPLICATE_KEY for e in errors):
                raise

    async def _get(self, kind: Kind, key: str) -> Doc | None:
        return _doc(await self._db[kind.name].find_one({"_id": key}))

    async def _find(
        self, kind: Kind, cond: Cond | None, order: Sequence[str], limit: int | None = None
    ) -> list[tuple[str, Doc]]:
        cursor = self._db[kind.name].find(_filter(cond))
        if order:
            cursor = cursor.sort(
                [
                    (_field(o.lstrip("-")), DESCENDING if o.startswith("-") else ASCENDING)
                    for o in order
                ]
            )
        if limit is not None:
            cursor = cursor.limit(limit)
        rows: list[tuple[str, Doc]] = []
        async for raw in cursor:
            doc = _doc(raw)
            assert doc is not None
            rows.append((raw["_id"], doc))
        return rows

    async def _find_and_update(
        self, kind: Kind, query: dict[str, Any], update: dict[str, Any]
    ) -> Doc | None:
        coll = self._db[kind.name]
        try:
            if not update:
                return _doc(await coll.find_one(query))
            raw = await coll.find_one_and_update(
                query, update, return_document=ReturnDocument.AFTER
            )
        except DuplicateKeyError as exc:
            raise _duplicate(kind, exc) from exc
        return _doc(raw)

    async def _update(
        self,
        kind: Kind,
        key: str,
        set_fields: Doc,
        *,
        expected_version: int | None = None,
        push: tuple[str, Doc] | None = None,
    ) -> Doc | None:
        query: dict[str, Any] = {"_id": key}
        if expected_version is not None:
            query["version"] = expected_version
        update: dict[str, Any] = {}
        if set_fields:
            update["$set"] = set_fields
        if push is not None:
            update["$push"] = {push[0]: push[1]}
        if kind.versioned:
            update["$inc"] = {"version": 1}
        return await self._find_and_update(kind, query, update)

    async def _array_add(self, kind: Kind, key: str, field: str, value: Any) -> Doc | None:
        return await self._find_and_update(kind, {"_id": key}, {"$addToSet": {field: value}})

    async def _array_remove(self, kind: Kind, key: str, field: str, value: Any) -> Doc | None:
        return await self._find_and_update(kind, {"_id": key}, {"$pull": {field: value}})

    async def _delete(self, kind: Kind, cond: Cond) -> int:
        result = await self._db[kind.name].delete_many(_filter(cond))
        return int(result.deleted_count)

    async def _count_up(self, counter: str, n: int) -> int:
        if n == 0:
            raw = await self._db["counters"].find_one({"_id": counter})
            return int(raw["n"]) if raw else 0
        raw = await self._db["counters"].find_one_and_update(
            {"_id": counter}, {"$inc": {"n": n}}, upsert=True, return_document=ReturnDocument.AFTER
        )
        return int(raw["n"])

    async def _insert_numbered(self, kind: Kind, counter: str, field: str, docs: list[Doc]) -> int:
        # Two single-document-atomic steps: a crash in between leaves a gap in the numbers,
        # never a duplicate or a step backwards.
        raw = await self._db["counters"].find_one_and_update(
            {"_id": counter},
            {"$inc": {"n": len(docs)}},
            upsert=True,
            return_document=ReturnDocument.AFTER,
        )
        last = int(raw["n"])
        first = last - len(docs) + 1
        numbered = [doc | {field: first + i} for i, doc in enumerate(docs)]
        await self._db[kind.name].insert_many(
            [{"_id": kind.key(doc), **doc} for doc in numbered], ordered=True
        )
        return last
