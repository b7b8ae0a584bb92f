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

    @property
    def is_admin(self) -> bool:
        return self.scope == "admin"

    def metadata(self) -> tuple[tuple[str, str], ...]:
        return ((SCOPE_KEY, self.scope), (SUBJECT_KEY, self.subject))

    @classmethod
    def from_metadata(cls, md: Sequence[tuple[str, str | bytes]] | None) -> Caller | None:
        values = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in (md or ())}
        scope, subject = values.get(SCOPE_KEY), values.get(SUBJECT_KEY)
        if scope not in ("admin", "user", "node") or not subject:
            return None
        return cls(scope=scope, subject=subject)  # type: ignore[arg-type]


def bearer(md: Sequence[tuple[str, str | bytes]] | None) -> str | None:
    for k, v in md or ():
        if k == "authorization":
            text = v.decode() if isinstance(v, bytes) else v
            if text.lower().startswith("bearer "):
                return text[7:].strip()
    return None
