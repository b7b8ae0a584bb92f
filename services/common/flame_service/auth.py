"""Token helpers and the caller identity carried in gRPC metadata."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Scope = Literal["admin", "user", "node"]
SCOPE_KEY = "x-flame-scope"
SUBJECT_KEY = "x-flame-subject"
ACCESS_KEY = "x-flame-access"  # "read": the caller's token may only query
SERVICE_KEY = "x-flame-service"  # the service credential: this call comes from a Flame service
IDEMPOTENCY_KEY = "x-flame-idempotency-key"  # a create's Idempotency-Key header, as sent
MAX_IDEMPOTENCY_KEY_LENGTH = 255


def valid_idempotency_key(key: str) -> bool:
    """1-255 printable ASCII characters (what an HTTP header and gRPC metadata both carry)."""
    return 0 < len(key) <= MAX_IDEMPOTENCY_KEY_LENGTH and all(" " <= c <= "~" for c in key)


def new_token(kind: str) -> str:
    """A bearer secret like ``flm_user_<43 url-safe chars>``; only its hash is stored."""
    return f"flm_{kind}_{secrets.token_urlsafe(32)}"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def token_matches(token: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_token(token), stored_hash)


@dataclass(frozen=True)
class Caller:
    scope: Scope
    subject: str  # user id or node id
    read_only: bool = False  # a token without the "write" scope

    @property
    def is_admin(self) -> bool:
        return self.scope == "admin"

    def metadata(self) -> tuple[tuple[str, str], ...]:
        md = ((SCOPE_KEY, self.scope), (SUBJECT_KEY, self.subject))
        return (*md, (ACCESS_KEY, "read")) if self.read_only else md

    @classmethod
    def from_metadata(cls, md: Sequence[tuple[str, str | bytes]] | None) -> Caller | None:
        values = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in (md or ())}
        scope, subject = values.get(SCOPE_KEY), values.get(SUBJECT_KEY)
        if scope not in ("admin", "user", "node") or not subject:
            return None
        read_only = values.get(ACCESS_KEY) == "read"
        return cls(scope=scope, subject=subject, read_only=read_only)  # type: ignore[arg-type]


def from_service(md: Sequence[tuple[str, str | bytes]] | None, expected: str) -> bool:
    """Whether the call carries the service credential (compared in constant time)."""
    for k, v in md or ():
        if k == SERVICE_KEY:
            got = v.decode() if isinstance(v, bytes) else v
            return bool(expected) and hmac.compare_digest(got.encode(), expected.encode())
    return False


def bearer(md: Sequence[tuple[str, str | bytes]] | None) -> str | None:
    for k, v in md or ():
        if k == "authorization":
            text = v.decode() if isinstance(v, bytes) else v
            if text.lower().startswith("bearer "):
                return text[7:].strip()
    return None
