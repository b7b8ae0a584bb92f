"""SQLite backend (aiosqlite): one JSON document per row plus indexed generated columns.

``journal_mode=WAL`` and ``synchronous=FULL``: a write returns only after its transaction is
committed and fsynced, so an acknowledged write survives a crash of the process or the host.
Writes go through one connection, serialised by an asyncio lock, so each primitive runs as one
transaction (``BEGIN IMMEDIATE`` also keeps other processes out while it reads and writes).
A file database gets a second connection for reads: under WAL a reader sees only committed data
and never waits for a writer's fsync.  ``PRAGMA user_version`` records the schema version.
SQL is built from table and column names that are constants of :mod:`.kinds` (hence the
``noqa: S608``); every value goes through a ``?`` parameter.
"""

from __future__ import annotations

import asyncio
import json
import math
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

import aiosqlite
from pydantic_core import from_json

from flame_controller.store.blobs import BlobStore
from flame_controller.store.decoded import DecodedRecords
from flame_controller.store.documents import Doc, DocumentStore, format_time
from flame_controller.store.kinds import ALL_KINDS, Kind
from flame_controller.store.query import And, Cond, Contains, Eq, Gt, In, Lte, NotIn, Or
from flame_controller.store.records import Record
from flame_service.errors import AlreadyExists, FailedPrecondition, Unavailable

T = TypeVar("T")
R = TypeVar("R", bound=Record)
KEY = "doc_key"
SCHEMA_VERSION = 1


def _plain(value: Any) -> Any:
    """JSON-ready: datetimes as fixed-width UTC text, non-finite floats as strings."""
    if isinstance(value, datetime):
        return format_time(value)
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _encode(doc: Doc) -> str:
    return json.dumps(_plain(doc), ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def _parse(text: str) -> Doc:
    doc: Doc = from_json(text)  # the same values as json.loads, in a quarter of the time
    return doc


def _param(value: Any) -> Any:
    return format_time(value) if isinstance(value, datetime) else value


def _column(kind: Kind, field: str) -> str:
    if field == "id":
        return KEY
    if field not in kind.columns:
        raise ValueError(f"{kind.name}.{field} is not a filterable column")
    return f'"{field}"'


def _sql(kind: Kind, cond: Cond, params: list[Any]) -> str:
    if isinstance(cond, Eq):
        if cond.value is None:
            return f"{_column(kind, cond.field)} IS NULL"
        params.append(_param(cond.value))
        return f"{_column(kind, cond.field)} = ?"
    if isinstance(cond, In | NotIn):
        col = _column(kind, cond.field)
        if not cond.values:
            return "0" if isinstance(cond, In) else "1"
        params.extend(_param(v) for v in cond.values)
        marks = ",".join("?" * len(cond.values))
        if isinstance(cond, In):
            return f"{col} IN ({marks})"
        return f"({col} IS NULL OR {col} NOT IN ({marks}))"
    if isinstance(cond, Gt):
        params.append(_param(cond.value))
        return f"{_column(kind, cond.field)} > ?"
    if isinstance(cond, Lte):
        params.append(_param(cond.value))
        return f"{_column(kind, cond.field)} <= ?"
    if isinstance(cond, Contains):
        params.append(_param(cond.value))
        path = f"$.{cond.field}"
        return f"EXISTS (SELECT 1 FROM json_each({kind.name}.doc, '{path}') AS e WHERE e.value = ?)"  # noqa: S608
    if isinstance(cond, And | Or):
        joiner = " AND " if isinstance(cond, And) else " OR "
        return "(" + joiner.join(_sql(kind, c, params) for c in cond.conds) + ")"
    raise TypeError(f"unknown condition {cond!r}")


def _order(kind: Kind, order: Sequence[str]) -> str:
    terms = []
    for item in order:
        desc = item.startswith("-")
        terms.append(_column(kind, item.lstrip("-")) + (" DESC" if desc else ""))
    return ", ".join(terms)


def _duplicate(kind: Kind, exc: sqlite3.IntegrityError) -> AlreadyExists:
    detail = str(exc)
    if f"{kind.name}.{KEY}" in detail:
        return AlreadyExists(f"{kind.name}: a record with this id already exists")
    fields = detail.rpartition(":")[2].replace(f"{kind.name}.", "").strip()
    return AlreadyExists(f"{kind.name}: a record with this {fields} already exists")


async def _add_missing_columns(conn: aiosqlite.Connection, kind: Kind) -> None:
    """A store written before a kind gained a filterable field gets its column (virtual
    generated columns can be added in place; older Flames ignore them)."""
    async with conn.execute(f"PRAGMA table_xinfo({kind.name})") as cursor:
        have = {row[1] for row in await cursor.fetchall()}
    for c in kind.columns:
        if c not in have:
            await conn.execute(
                f"ALTER TABLE {kind.name} ADD COLUMN "
                f"\"{c}\" GENERATED ALWAYS AS (json_extract(doc, '$.{c}')) VIRTUAL"
            )


async def _connect(path: str) -> aiosqlite.Connection:
    conn = await aiosqlite.connect(path, isolation_level=None)
    try:
        await conn.execute("PRAGMA journal_mode=WAL")
        await conn.execute("PRAGMA synchronous=FULL")
        await conn.execute("PRAGMA busy_timeout=10000")
    except BaseException:
        await conn.close()
        raise
    return conn


class SqliteStore(DocumentStore):
    def __init__(
        self,
        conn: aiosqlite.Connection,
        blobs: BlobStore,
        reader: aiosqlite.Connection | None = None,
    ) -> None:
        super().__init__(blobs)
        self._conn = conn
        self._reader = reader
        self._lock = asyncio.Lock()
        self._unfinished: set[asyncio.Future[Any]] = set()  # transactions whose caller left
        # One statement at a time on the reader: while any statement is active, SQLite keeps the
        # connection's WAL snapshot, so interleaved reads would never see newer commits.
        self._read_lock = asyncio.Lock()
        self._decoded = DecodedRecords()
        self._closed = False

    @classmethod
    async def open(cls, path: str, blobs: BlobStore) -> SqliteStore:
        """Open (creating if needed) the database at ``path`` (``":memory:"`` for a private
        in-memory one)."""
        conn = await _connect(path)
        reader: aiosqlite.Connection | None = None
        try:
            store = cls(conn, blobs)
            await store._create_schema()
            if path != ":memory:":
                reader = await _connect(path)
                store._reader = reader
        except BaseException:
            await conn.close()
            if reader is not None:
                await reader.close()
            raise
        return store

    async def _create_schema(self) -> None:
        async def create(conn: aiosqlite.Connection) -> None:
            async with conn.execute("PRAGMA user_version") as cursor:
                row = await cursor.fetchone()
            found = int(row[0]) if row else 0
            if found > SCHEMA_VERSION:
                raise FailedPrecondition(
                    f"the store was written by a newer Flame (schema {found} > {SCHEMA_VERSION})"
                )
            for kind in ALL_KINDS:
                columns = "".join(
                    f", \"{c}\" GENERATED ALWAYS AS (json_extract(doc, '$.{c}')) VIRTUAL"
                    for c in kind.columns
                )
                await conn.execute(
                    f"CREATE TABLE IF NOT EXISTS {kind.name} "
                    f"({KEY} TEXT PRIMARY KEY, doc TEXT NOT NULL{columns})"
                )
                await _add_missing_columns(conn, kind)
                for unique, groups in ((True, kind.unique), (False, kind.indexes)):
                    for group in groups:
                        name = f"{kind.name}_{'_'.join(group)}"
                        cols = ", ".join(f'"{c}"' for c in group)
                        await conn.execute(
                            f"CREATE {'UNIQUE ' if unique else ''}INDEX IF NOT EXISTS "
                            f"{name} ON {kind.name} ({cols})"
                        )
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, n INTEGER NOT NULL)"
            )
            await conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

        await self._tx(create)

    async def _tx(self, body: Callable[[aiosqlite.Connection], Awaitable[T]]) -> T:
        """Run ``body`` as one transaction. A caller cancelled meanwhile (a client that went
        away) does not cut it short: it runs on as its own task to its commit or rollback, so
        the connection is never left inside a transaction that every later write would trip
        over ("cannot start a transaction within a transaction")."""
        task = asyncio.ensure_future(self._run_tx(body))
        self._unfinished.add(task)
        task.add_done_callback(self._unfinished.discard)
        return await asyncio.shield(task)

    async def _run_tx(self, body: Callable[[aiosqlite.Connection], Awaitable[T]]) -> T:
        async with self._lock:
            await self._conn.execute("BEGIN IMMEDIATE")
            try:
                result = await body(self._conn)
            except BaseException:
                await self._conn.rollback()
                raise
            await self._conn.commit()
            return result

    async def _read(self, sql: str, params: Sequence[Any]) -> list[sqlite3.Row]:
        if self._reader is not None:
            async with self._read_lock, self._reader.execute(sql, params) as cursor:
                return list(await cursor.fetchall())
        async with self._lock, self._conn.execute(sql, params) as cursor:
            return list(await cursor.fetchall())

    async def close(self) -> None:
        async with self._lock:
            if not self._closed:
                self._closed = True
                if self._reader is not None:
                    await self._reader.close()
                await self._conn.close()

    async def ping(self) -> None:
        try:
            await self._read("SELECT 1", ())
        except (sqlite3.Error, ValueError) as exc:
            raise Unavailable(f"sqlite store unavailable: {exc}") from exc

    # ------------------------------------------------------------------ primitives
    async def _insert(self, kind: Kind, key: str, doc: Doc) -> None:
        async def insert(conn: aiosqlite.Connection) -> None:
            try:
                await conn.execute(
                    f"INSERT INTO {kind.name} ({KEY}, doc) VALUES (?, ?)",  # noqa: S608
                    (key, _encode(doc)),
                )
            except sqlite3.IntegrityError as exc:
                raise _duplicate(kind, exc) from exc

        await self._tx(insert)

    async def _insert_missing(self, kind: Kind, items: Sequence[tuple[str, Doc]]) -> None:
        rows = [(key, _encode(doc)) for key, doc in items]

        async def insert(conn: aiosqlite.Connection) -> None:
            await conn.executemany(
                f"INSERT INTO {kind.name} ({KEY}, doc) VALUES (?, ?) ON CONFLICT({KEY}) DO NOTHING",  # noqa: S608
                rows,
            )

        await self._tx(insert)

    async def _get(self, kind: Kind, key: str) -> Doc | None:
        rows = await self._read(f"SELECT doc FROM {kind.name} WHERE {KEY} = ?", (key,))  # noqa: S608
        return _parse(rows[0][0]) if rows else None

    async def _find(
        self, kind: Kind, cond: Cond | None, order: Sequence[str], limit: int | None = None
    ) -> list[tuple[str, Doc]]:
        return [(key, _parse(text)) for key, text in await self._select(kind, cond, order, limit)]

    async def _find_records(
        self,
        kind: Kind,
        model: type[R],
        cond: Cond | None,
        order: Sequence[str],
        limit: int | None = None,
    ) -> list[tuple[str, R]]:
        def decode(text: str) -> R:
            return self._decode(kind, model, _parse(text))

        rows = await self._select(kind, cond, order, limit)
        return [(key, self._decoded.get(kind.name, model, text, decode)) for key, text in rows]

    async def _select(
        self, kind: Kind, cond: Cond | None, order: Sequence[str], limit: int | None
    ) -> list[tuple[str, str]]:
        """Matching ``(key, stored text)`` pairs."""
        params: list[Any] = []
        sql = f"SELECT {KEY}, doc FROM {kind.name}"  # noqa: S608
        if cond is not None:
            sql += " WHERE " + _sql(kind, cond, params)
        if order:
            sql += " ORDER BY " + _order(kind, order)
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return [(row[0], row[1]) for row in await self._read(sql, params)]

    async def _rewrite(
        self, kind: Kind, key: str, change: Callable[[Doc], Doc | None]
    ) -> Doc | None:
        """Read-modify-write one document in one transaction; ``change`` returns the new
        document, or ``None`` to leave it (the result is then ``None``)."""

        async def rewrite(conn: aiosqlite.Connection) -> Doc | None:
            async with conn.execute(f"SELECT doc FROM {kind.name} WHERE {KEY} = ?", (key,)) as cur:  # noqa: S608
                row = await cur.fetchone()
            if row is None:
                return None
            doc = change(_parse(row[0]))
            if doc is None:
                return None
            try:
                await conn.execute(
                    f"UPDATE {kind.name} SET doc = ? WHERE {KEY} = ?",  # noqa: S608
                    (_encode(doc), key),
                )
            except sqlite3.IntegrityError as exc:
                raise _duplicate(kind, exc) from exc
            return _parse(_encode(doc))

        return await self._tx(rewrite)

    async def _update(
        self,
        kind: Kind,
        key: str,
        set_fields: Doc,
        *,
        expected_version: int | None = None,
        push: tuple[str, Doc] | None = None,
    ) -> Doc | None:
        def change(doc: Doc) -> Doc | None:
            if expected_version is not None and doc.get("version") != expected_version:
                return None
            doc.update(set_fields)
            if push is not None:
                doc[push[0]] = [*doc.get(push[0], []), push[1]]
            if kind.versioned:
                doc["version"] = doc.get("version", 0) + 1
            return doc

        return await self._rewrite(kind, key, change)

    async def _array_add(self, kind: Kind, key: str, field: str, value: Any) -> Doc | None:
        def change(doc: Doc) -> Doc:
            if value not in doc.get(field, []):
                doc[field] = [*doc.get(field, []), value]
            return doc

        return await self._rewrite(kind, key, change)

    async def _array_remove(self, kind: Kind, key: str, field: str, value: Any) -> Doc | None:
        def change(doc: Doc) -> Doc:
            doc[field] = [v for v in doc.get(field, []) if v != value]
            return doc

        return await self._rewrite(kind, key, change)

    async def _delete(self, kind: Kind, cond: Cond) -> int:
        params: list[Any] = []
        where = _sql(kind, cond, params)

        async def delete(conn: aiosqlite.Connection) -> int:
            cursor = await conn.execute(f"DELETE FROM {kind.name} WHERE {where}", params)  # noqa: S608
            return int(cursor.rowcount)

        return await self._tx(delete)

    async def _insert_numbered(self, kind: Kind, counter: str, field: str, docs: list[Doc]) -> int:
        async def insert(conn: aiosqlite.Connection) -> int:
            async with conn.execute(
                "INSERT INTO counters (name, n) VALUES (?, ?) "
                "ON CONFLICT(name) DO UPDATE SET n = n + excluded.n RETURNING n",
                (counter, len(docs)),
            ) as cursor:
                row = await cursor.fetchone()
            assert row is not None
            last = int(row[0])
            first = last - len(docs) + 1
            numbered = [doc | {field: first + i} for i, doc in enumerate(docs)]
            await conn.executemany(
                f"INSERT INTO {kind.name} ({KEY}, doc) VALUES (?, ?)",  # noqa: S608
                [(kind.key(doc), _encode(doc)) for doc in numbered],
            )
            return last

        return await self._tx(insert)

    async def _count_up(self, counter: str, n: int) -> int:
        async def bump(conn: aiosqlite.Connection) -> int:
            async with conn.execute(
                "INSERT INTO counters (name, n) VALUES (?, ?) "
                "ON CONFLICT(name) DO UPDATE SET n = n + excluded.n RETURNING n",
                (counter, n),
            ) as cursor:
                row = await cursor.fetchone()
            assert row is not None
            return int(row[0])

        if n == 0:
            rows = await self._read("SELECT n FROM counters WHERE name = ?", (counter,))
            return int(rows[0][0]) if rows else 0
        return await self._tx(bump)
