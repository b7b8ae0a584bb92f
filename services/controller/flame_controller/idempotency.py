"""Idempotent creates: a create retried with the same ``Idempotency-Key`` returns the first
result and makes nothing new.

A key is scoped to the caller and the call: the record's id is a hash of (caller scope, caller
subject, call, key), so one user's key never reaches another user's record, and the key itself
is not stored. The record remembers a fingerprint of the request (the same key with another
request is refused, :class:`IdempotencyKeyReused`) and, once the create succeeded, its
response, for :data:`KEY_TTL`.

Crash safety without multi-record transactions: the record is claimed *before* the create runs,
with a random seed. The create draws its ids and secrets from that seed
(:mod:`flame_controller.domain.entropy`) and sees a :class:`ReplayStore`. If it is interrupted
after writing its records but before its response was recorded (the controller killed, the
apiserver gone), the retry finds the record without a response and runs the create again: the
same ids, so its writes meet the records of the first attempt, which :class:`ReplayStore` hands
back instead of failing on the duplicate; the same secrets, so the token it returns is the one
whose hash was stored. Two concurrent requests with one key do the same and agree.

Secrets are never stored: a recorded response has them removed, and a replay derives them
again (the derivation also needs the controller's data-plane secret, which is not in the
store). A create that fails leaves its record without a response: a retry runs it again.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar, cast

import structlog
from google.protobuf.message import Message

from flame_service.auth import Caller, valid_idempotency_key
from flame_service.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound

from .domain.context import Ctx
from .domain.entropy import Entropy, derived
from .store.base import Store
from .store.records import IdempotencyRecord, utcnow

log = structlog.get_logger(__name__)

#: How long a key is remembered after its first use.
KEY_TTL = timedelta(hours=24)
M = TypeVar("M", bound=Message)


class IdempotencyKeyReused(FailedPrecondition):
    code = "idempotency_key_reused"


def key_id(caller: Caller, call: str, key: str) -> str:
    scoped = "\n".join((caller.scope, caller.subject, call, key))
    return hashlib.sha256(scoped.encode()).hexdigest()


def fingerprint(request: Message) -> str:
    return hashlib.sha256(request.SerializeToString(deterministic=True)).hexdigest()


def _entropy(ctx: Ctx, seed: str) -> Entropy:
    # Without the controller's secret (unit tests) the stored seed alone keys the derivation.
    secret = ctx.data_plane_secret or b"flame-idempotency"
    return Entropy(hmac.new(secret, bytes.fromhex(seed), hashlib.sha256).digest())


async def once(
    ctx: Ctx,
    caller: Caller,
    call: str,
    key: str,
    request: Message,
    create: Callable[[Ctx], Awaitable[M]],
    parse: Callable[[bytes], M],
) -> M:
    """Run ``create`` once per (caller, ``call``, ``key``); later calls get its response.

    ``create`` gets the context to run with (its store is a :class:`ReplayStore`)."""
    if not valid_idempotency_key(key):
        raise InvalidArgument("Idempotency-Key must be 1-255 printable ASCII characters")
    now = utcnow()
    await ctx.store.purge_idempotency_keys(now)
    claimed = await ctx.store.claim_idempotency_key(
        IdempotencyRecord(
            id=key_id(caller, call, key),
            call=call,
            fingerprint=fingerprint(request),
            seed=secrets.token_hex(32),
            created_at=now,
            expires_at=now + KEY_TTL,
        )
    )
    if claimed.fingerprint != fingerprint(request):
        raise IdempotencyKeyReused(
            "this Idempotency-Key was already used for a different request; "
            "use a new key for a new request"
        )
    entropy = _entropy(ctx, claimed.seed)
    if claimed.response:
        log.info("idempotency.replayed", call=call)
        return _replay(claimed, entropy, parse)
    with derived(entropy):
        result = await create(dataclasses.replace(ctx, store=cast(Store, ReplayStore(ctx.store))))
    await _complete(ctx.store, claimed.id, result, entropy)
    return result


async def _complete(store: Store, record_id: str, result: Message, entropy: Entropy) -> None:
    kept = type(result)()
    kept.CopyFrom(result)
    issued = {entropy.secret_at(i, kind): (i, kind) for i, kind in entropy.secrets}
    where: dict[str, Any] = {}
    for desc, value in result.ListFields():
        if isinstance(value, str) and value in issued:
            kept.ClearField(desc.name)
            index, kind = issued[value]
            where = {"secret_field": desc.name, "secret_index": index, "secret_kind": kind}
            break
    response = base64.b64encode(kept.SerializeToString(deterministic=True)).decode()
    try:
        await store.complete_idempotency_key(record_id, response, **where)
    except NotFound:  # expired and purged while the create ran: nothing left to answer
        log.warning("idempotency.record_gone", record=record_id)


def _replay(record: IdempotencyRecord, entropy: Entropy, parse: Callable[[bytes], M]) -> M:
    result = parse(base64.b64decode(record.response))
    if record.secret_field:
        setattr(
            result, record.secret_field, entropy.secret_at(record.secret_index, record.secret_kind)
        )
    return result


class ReplayStore:
    """The store as a create run under an ``Idempotency-Key`` sees it: creating a record whose
    id is already stored returns the stored record. Ids are derived from the key's seed, so
    that record is the one an earlier, interrupted attempt of this very request made; a
    duplicate of anything else (another record's unique name) still fails."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._store, name)
        kind = name.removeprefix("create_")
        getter = getattr(self._store, f"get_{kind}", None)
        if kind == name or getter is None or kind == "code":  # code: see domain.code.push_code
            return attr

        async def create(record: Any) -> Any:
            try:
                return await attr(record)
            except AlreadyExists as exc:
                try:
                    found = await getter(record.id)
                except NotFound:
                    raise exc from None
                log.info("idempotency.resumed", kind=kind, id=record.id)
                return found

        return create
