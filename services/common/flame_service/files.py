"""Writing files that must never be seen half-written, or by anyone but their owner."""

from __future__ import annotations

import os
from pathlib import Path


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` (temp file, fsync, rename) with ``mode`` from the start."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        tmp.chmod(mode)  # an existing temp file keeps its old mode through O_CREAT
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def write_private(path: Path, data: bytes | str) -> None:
    """Write a file only its owner may read (0600), creating its folder 0700."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomic(path, data.encode() if isinstance(data, str) else data, mode=0o600)
