"""Safe inspection and extraction of zip archives (code bundles).

Used by the controller (code push), the deployer and the flamelet (task bundles). Every member
name is checked before anything is written: no ``..`` components, no absolute paths, no drive
letters or backslashes, no symlinks or other special files, no duplicates, no encryption; the
number of members, the total uncompressed size and the per-member compression ratio are capped.
Extraction re-checks everything, counts the bytes it really writes (declared sizes can lie) and
opens every output file without following links, so nothing lands outside ``dest``.
"""

from __future__ import annotations

import io
import os
import stat
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from flame_service.errors import InvalidArgument, TooLarge

MiB = 1024 * 1024
DEFAULT_MAX_BYTES = 64 * MiB
DEFAULT_MAX_UNCOMPRESSED = 256 * MiB
DEFAULT_MAX_FILES = 10_000
DEFAULT_MAX_RATIO = 200  # uncompressed / compressed per member; zip bombs reach 1000+
_RATIO_FLOOR = 1 * MiB  # members smaller than this are never ratio-checked
_CHUNK = 1 * MiB


@dataclass(frozen=True)
class ZipCaps:
    max_bytes: int = DEFAULT_MAX_BYTES
    max_files: int = DEFAULT_MAX_FILES
    max_uncompressed: int = DEFAULT_MAX_UNCOMPRESSED
    max_ratio: int = DEFAULT_MAX_RATIO


def _check_name(name: str) -> str:
    """Return the normalised member name, or raise InvalidArgument."""
    if not name or "\x00" in name:
        raise InvalidArgument(f"zip member has an empty or NUL-containing name: {name!r}")
    if "\\" in name:
        raise InvalidArgument(f"zip member {name!r} uses backslashes; use '/' separators")
    if name.startswith("/"):
        raise InvalidArgument(f"zip member {name!r} is an absolute path")
    first = name.split("/", 1)[0]
    if len(first) >= 2 and first[1] == ":":
        raise InvalidArgument(f"zip member {name!r} starts with a drive letter")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise InvalidArgument(f"zip member {name!r} escapes the archive root with '..'")
    if not parts:
        raise InvalidArgument(f"zip member {name!r} names the archive root")
    normalised = "/".join(parts)
    return normalised + "/" if name.endswith("/") else normalised


def _check_kind(info: zipfile.ZipInfo) -> None:
    mode = (info.external_attr >> 16) & 0xFFFF
    kind = stat.S_IFMT(mode)
    if kind == stat.S_IFLNK:
        raise InvalidArgument(f"zip member {info.filename!r} is a symbolic link")
    if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
        raise InvalidArgument(f"zip member {info.filename!r} is not a regular file or folder")
    if info.flag_bits & 0x1:
        raise InvalidArgument(f"zip member {info.filename!r} is encrypted")


def _open(data: bytes, caps: ZipCaps) -> tuple[zipfile.ZipFile, list[tuple[str, zipfile.ZipInfo]]]:
    if len(data) > caps.max_bytes:
        raise TooLarge(f"zip is {len(data)} bytes; the limit is {caps.max_bytes} bytes")
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
        infos = zf.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError) as exc:
        raise InvalidArgument(f"not a valid zip archive: {exc}") from exc
    if len(infos) > caps.max_files:
        raise TooLarge(f"zip has {len(infos)} members; the limit is {caps.max_files}")
    seen: set[str] = set()
    seen_folded: set[str] = set()
    total = 0
    checked: list[tuple[str, zipfile.ZipInfo]] = []
    for info in infos:
        name = _check_name(info.filename)
        _check_kind(info)
        key = name.rstrip("/")
        if key in seen or key.casefold() in seen_folded:
            raise InvalidArgument(f"zip member {info.filename!r} appears more than once")
        seen.add(key)
        seen_folded.add(key.casefold())
        if info.file_size < 0 or info.compress_size < 0:
            raise InvalidArgument(f"zip member {info.filename!r} declares a negative size")
        total += info.file_size
        if total > caps.max_uncompressed:
            raise TooLarge(
                f"zip expands to more than {caps.max_uncompressed} bytes (uncompressed size cap)"
            )
        if info.file_size > _RATIO_FLOOR and info.file_size > caps.max_ratio * max(
            info.compress_size, 1
        ):
            raise TooLarge(
                f"zip member {info.filename!r} compresses {info.file_size}:"
                f"{info.compress_size}, above the {caps.max_ratio}:1 ratio cap"
            )
        checked.append((name, info))
    # A file and a folder may not share a path prefix in conflicting ways ("a" file, "a/b").
    files = {n for n, i in checked if not n.endswith("/")}
    for n, _ in checked:
        parent = PurePosixPath(n.rstrip("/")).parent
        while str(parent) != ".":
            if str(parent) in files:
                raise InvalidArgument(f"zip member {n!r} lies below the file {str(parent)!r}")
            parent = parent.parent
    return zf, checked


def inspect_zip(
    data: bytes,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_files: int = DEFAULT_MAX_FILES,
    max_uncompressed: int = DEFAULT_MAX_UNCOMPRESSED,
    max_ratio: int = DEFAULT_MAX_RATIO,
) -> list[str]:
    """Check a zip without extracting it; return its normalised member names (folders end in /).

    Raises :class:`InvalidArgument` for unsafe or malformed archives and :class:`TooLarge` when
    a size, count or ratio cap is exceeded."""
    caps = ZipCaps(max_bytes, max_files, max_uncompressed, max_ratio)
    zf, checked = _open(data, caps)
    with zf:
        return [name for name, _ in checked]


def safe_extract(
    data: bytes,
    dest: Path,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_files: int = DEFAULT_MAX_FILES,
    max_uncompressed: int = DEFAULT_MAX_UNCOMPRESSED,
    max_ratio: int = DEFAULT_MAX_RATIO,
) -> list[str]:
    """Extract ``data`` into ``dest`` (created if missing) after the checks of :func:`inspect_zip`.

    Files are written with mode 0644 and never through an existing link; the bytes actually
    decompressed are counted against each member's declared size and the total cap. Returns
    the extracted member names. On error ``dest`` may hold a partial extraction: extract into
    a fresh folder and remove it on failure."""
    caps = ZipCaps(max_bytes, max_files, max_uncompressed, max_ratio)
    zf, checked = _open(data, caps)
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    written_total = 0
    with zf:
        for name, info in checked:
            target = root.joinpath(*name.rstrip("/").split("/"))
            resolved_parent = target.parent.resolve()
            if resolved_parent != root and root not in resolved_parent.parents:
                raise InvalidArgument(f"zip member {name!r} would be written outside {dest}")
            if name.endswith("/"):
                _mkdir_inside(root, target)
                continue
            _mkdir_inside(root, target.parent)
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
            try:
                fd = os.open(target, flags, 0o644)
            except FileExistsError as exc:
                raise InvalidArgument(f"zip member {name!r} already exists in {dest}") from exc
            written = 0
            try:
                with os.fdopen(fd, "wb") as out, zf.open(info) as src:
                    while chunk := src.read(_CHUNK):
                        written += len(chunk)
                        written_total += len(chunk)
                        if written > info.file_size or written_total > caps.max_uncompressed:
                            raise TooLarge(f"zip member {name!r} expands beyond its declared size")
                        out.write(chunk)
            except (zipfile.BadZipFile, EOFError, zlib.error) as exc:
                raise InvalidArgument(f"zip member {name!r} is corrupt: {exc}") from exc
    return [name for name, _ in checked]


def _mkdir_inside(root: Path, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    resolved = folder.resolve()
    if resolved != root and root not in resolved.parents:
        raise InvalidArgument(f"folder {folder} resolves outside {root}")
