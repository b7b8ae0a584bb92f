"""Content-addressed blob stores for code zips (up to 64 MiB, too big for a Mongo document).

Keys are the sha256 hex digest of the bytes.  :class:`FileBlobStore` writes atomically
(temporary file, fsync, rename, fsync of the directory), so a blob is either whole or absent
after a crash; :class:`MemoryBlobStore` serves ``sqlite://:memory:``.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import Protocol

from flame_service.errors import InvalidArgument, NotFound

_KEY_RE = re.compile(r"^[0-9a-f]{64}$")


def blob_key(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_key(key: str) -> str:
    if not _KEY_RE.match(key):
        raise InvalidArgument(f"malformed blob key {key!r} (want 64 lowercase hex digits)")
    return key


class BlobStore(Protocol):
    async def put(self, data: bytes) -> str: ...
    async def get(self, key: str) -> bytes: ...
    async def delete(self, key: str) -> None: ...


class MemoryBlobStore:
    def __init__(self) -> None:
        self._blobs: dict[str, bytes] = {}

    async def put(self, data: bytes) -> str:
        key = blob_key(data)
        self._blobs.setdefault(key, bytes(data))
        return key

    async def get(self, key: str) -> bytes:
        try:
            return self._blobs[check_key(key)]
        except KeyError:
            raise NotFound(f"blob {key} not found") from None

    async def delete(self, key: str) -> None:
        self._blobs.pop(check_key(key), None)


class FileBlobStore:
    """Blobs as files ``<root>/<key[:2]>/<key>``."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        check_key(key)
        return self.root / key[:2] / key

    async def put(self, data: bytes) -> str:
        return await asyncio.to_thread(self._put, bytes(data))

    def _put(self, data: bytes) -> str:
        key = blob_key(data)
        path = self._path(key)
        if path.exists():
            return key
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            Path(tmp).replace(path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _fsync_dir(path.parent)
        return key

    async def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            raise NotFound(f"blob {key} not found") from None

    async def delete(self, key: str) -> None:
        path = self._path(key)
        await asyncio.to_thread(path.unlink, missing_ok=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
