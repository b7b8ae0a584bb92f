"""Where new ids and secrets come from: fresh randomness, or a seed while an idempotent create
runs.

A create that carries an ``Idempotency-Key`` draws its ids and secrets from an :class:`Entropy`
keyed by a random seed that is stored with the key (and by the controller's secret, which is
not in the store). When the create is interrupted after it wrote its records but before its
response was recorded, the retry runs it again with the same seed: it makes the same ids (so
it finds the records already there instead of making second ones) and the same secrets (so the
token it returns is the one whose hash was stored).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

from flame_controller.store.records import ID_SOURCE
from flame_service.auth import new_token


@dataclass
class Entropy:
    """Derives the ``n``-th id or secret of one create from ``material`` (HMAC-SHA256)."""

    material: bytes = field(repr=False)
    drawn: int = 0
    secrets: list[tuple[int, str]] = field(default_factory=list)  # (index, kind) issued

    def _next(self) -> int:
        index = self.drawn
        self.drawn += 1
        return index

    def new_id(self) -> str:
        return self.derive(b"id", self._next()).hex()[:32]

    def new_secret(self, kind: str) -> str:
        index = self._next()
        self.secrets.append((index, kind))
        return self.secret_at(index, kind)

    def secret_at(self, index: int, kind: str) -> str:
        """The secret :meth:`new_secret` returned as draw ``index`` (same form as
        :func:`flame_service.auth.new_token`)."""
        text = base64.urlsafe_b64encode(self.derive(b"secret", index)).decode().rstrip("=")
        return f"flm_{kind}_{text}"

    def derive(self, purpose: bytes, index: int) -> bytes:
        msg = purpose + b"\0" + index.to_bytes(8, "big")
        return hmac.new(self.material, msg, hashlib.sha256).digest()


_CURRENT: ContextVar[Entropy | None] = ContextVar("flame_entropy", default=None)


@contextmanager
def derived(entropy: Entropy) -> Iterator[Entropy]:
    """Inside the block, :func:`flame_controller.store.records.new_id` and :func:`new_secret`
    draw from ``entropy``."""
    token = _CURRENT.set(entropy)
    id_token = ID_SOURCE.set(entropy.new_id)
    try:
        yield entropy
    finally:
        ID_SOURCE.reset(id_token)
        _CURRENT.reset(token)


def new_secret(kind: str) -> str:
    """A bearer secret like ``flm_<kind>_<43 url-safe chars>``."""
    entropy = _CURRENT.get()
    return entropy.new_secret(kind) if entropy is not None else new_token(kind)
