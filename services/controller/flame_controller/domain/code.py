"""Code versions: one zip per version of a design, one top-level folder per role.

The zip is checked with :func:`flame_service.archive.inspect_zip` (≤ 64 MiB compressed,
≤ 256 MiB uncompressed, no path escapes or links); every top-level folder must be a role of the
design and every role must have a folder with a ``main.py``.  Versions count up from 1."""

from __future__ import annotations

import hashlib

import structlog

from flame_service.archive import inspect_zip
from flame_service.auth import Caller
from flame_service.errors import AlreadyExists, Conflict, FailedPrecondition, InvalidArgument

from ..store.records import CodeRecord, DesignRecord, new_id
from .access import ensure_owner, fetch
from .context import Ctx
from .designs import get_design
from .results import CodeBundle

log = structlog.get_logger(__name__)
MAX_ZIP_BYTES = 64 * 1024 * 1024
MAX_UNCOMPRESSED_BYTES = 256 * 1024 * 1024
MAX_FILES = 10_000


def design_roles(design: DesignRecord) -> list[str]:
    return [str(r["name"]) for r in design.schema_.get("roles", [])]


def check_code_layout(names: list[str], roles: list[str]) -> list[str]:
    """The role folders of a zip, checked against the design's roles (in design order)."""
    folders: set[str] = set()
    has_main: set[str] = set()
    for name in names:
        top, sep, rest = name.partition("/")
        if not sep:
            continue  # a top-level file (README, requirements.txt) is allowed
        folders.add(top)
        if rest == "main.py":
            has_main.add(top)
    unknown = sorted(folders - set(roles))
    if unknown:
        raise InvalidArgument(
            f"the zip has folder(s) {', '.join(map(repr, unknown))} that are not roles of the "
            f"design (roles: {', '.join(map(repr, roles))})"
        )
    missing = [r for r in roles if r not in has_main]
    if missing:
        raise InvalidArgument(
            "every role needs a folder with main.py; missing: "
            + ", ".join(f"{r}/main.py" for r in missing)
        )
    return list(roles)


async def push_code(ctx: Ctx, caller: Caller, *, design_id: str, data: bytes) -> CodeRecord:
    design = await get_design(ctx, caller, design_id)
    await ensure_owner(ctx, caller, design, "design")
    if not data:
        raise InvalidArgument("the code zip is empty")
    names = inspect_zip(
        data,
        max_bytes=MAX_ZIP_BYTES,
        max_files=MAX_FILES,
        max_uncompressed=MAX_UNCOMPRESSED_BYTES,
    )
    roles = check_code_layout(names, design_roles(design))
    digest = hashlib.sha256(data).hexdigest()
    key = await ctx.store.put_blob(data)
    request_id = new_id()  # derived from the Idempotency-Key when there is one
    for _ in range(5):
        existing = await ctx.store.list_code(design_id)
        for earlier in existing:
            if earlier.request_id == request_id:  # a retry of a push that stored it already
                log.info("idempotency.resumed", kind="code", version=earlier.version)
                return earlier
        version = (existing[-1].version if existing else 0) + 1
        record = CodeRecord(
            design_id=design_id,
            version=version,
            sha256=digest,
            size_bytes=len(data),
            roles=roles,
            blob_key=key,
            request_id=request_id,
        )
        try:
            created = await ctx.store.create_code(record)
        except AlreadyExists:
            continue  # a concurrent push took this version number
        log.info("code.pushed", design_id=design_id, version=version, sha256=digest)
        return created
    raise Conflict("too many concurrent code pushes; retry")


async def get_code(ctx: Ctx, caller: Caller, *, design_id: str, version: int) -> CodeRecord:
    await get_design(ctx, caller, design_id)
    if version < 0:
        raise InvalidArgument("version must be positive (0 = latest)")
    what = f"{design_id}@{version or 'latest'}"
    return await fetch(ctx.store.get_code(design_id, version or None), "code version", what)


async def list_code(ctx: Ctx, caller: Caller, *, design_id: str) -> list[CodeRecord]:
    await get_design(ctx, caller, design_id)
    return await ctx.store.list_code(design_id)


async def fetch_code(ctx: Ctx, caller: Caller, *, design_id: str, version: int) -> CodeBundle:
    meta = await get_code(ctx, caller, design_id=design_id, version=version)
    return CodeBundle(meta=meta, zip=await ctx.store.get_blob(meta.blob_key))


async def delete_code(ctx: Ctx, caller: Caller, *, design_id: str, version: int) -> None:
    design = await get_design(ctx, caller, design_id)
    await ensure_owner(ctx, caller, design, "design")
    if version <= 0:
        raise InvalidArgument("give the version to delete (a positive number)")
    meta = await get_code(ctx, caller, design_id=design_id, version=version)
    after: str | None = None
    while True:
        jobs, after = await ctx.store.list_jobs(design_id=design_id, limit=1000, after=after)
        users = [j.id for j in jobs if j.code_version == version]
        if users:
            raise FailedPrecondition(
                f"code version {version} of design {design_id!r} is used by job {users[0]!r}"
            )
        if after is None:
            break
    await ctx.store.delete_code(design_id, version)
    if not any(c.blob_key == meta.blob_key for c in await ctx.store.list_code(design_id)):
        # Blobs are content-addressed and may be shared with other designs' code: only the
        # blob of this design is dropped when no other version of it uses the same bytes.
        others = await _blob_used_elsewhere(ctx, meta.blob_key)
        if not others:
            await ctx.store.delete_blob(meta.blob_key)
    log.info("code.deleted", design_id=design_id, version=version, by=caller.subject)


async def _blob_used_elsewhere(ctx: Ctx, key: str) -> bool:
    after: str | None = None
    while True:
        designs, after = await ctx.store.list_designs(limit=1000, after=after)
        for d in designs:
            if any(c.blob_key == key for c in await ctx.store.list_code(d.id)):
                return True
        if after is None:
            return False
