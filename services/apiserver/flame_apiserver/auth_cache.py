"""Who a bearer secret stood for, remembered briefly so that a burst of requests with one token
costs one ``Authenticate`` call to the controller instead of one each.

The bound: a credential revoked or expired elsewhere (another apiserver process, the reconciler
revoking a finished job's task credentials, a token's own expiry) still passes here for at most
``ttl`` seconds after this process last asked the controller about it. A successful change made
through this process (revoking a token, demoting or deleting a user, revoking a node, ...)
forgets every entry at once, and an answer that was in flight while it happened is not kept.
Only successes are remembered; keys are the secrets' sha256 digests, never the secrets.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable

from starlette.types import ASGIApp, Receive, Scope, Send

from flame_apiserver.middleware import StatusRecorder
from flame_service.auth import Caller

MAX_ENTRIES = 10_000
QUERIES = frozenset({"GET", "HEAD", "OPTIONS"})
AGENT_PREFIX = "/v1/agent/"  # node reports (logs, health, status): they change no credential


class AuthCache:
    def __init__(
        self,
        ttl: float,
        max_entries: int = MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self.clock = clock  # tests move it
        self._entries: OrderedDict[bytes, tuple[float, Caller]] = OrderedDict()
        self.generation = 0  # bumped by every clear()

    @staticmethod
    def _key(credential: str) -> bytes:
        return hashlib.sha256(credential.encode()).digest()

    def get(self, credential: str) -> Caller | None:
        if self.ttl <= 0:
            return None
        key = self._key(credential)
        found = self._entries.get(key)
        if found is None:
            return None
        until, caller = found
        if until <= self.clock():
            del self._entries[key]
            return None
        return caller

    def put(self, credential: str, caller: Caller, generation: int) -> None:
        """Remember ``caller`` unless the cache was cleared since ``generation`` was read (the
        controller's answer may predate that change)."""
        if self.ttl <= 0 or generation != self.generation:
            return
        key = self._key(credential)
        self._entries[key] = (self.clock() + self.ttl, caller)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()
        self.generation += 1


class ForgetCallersOnChange:
    """ASGI middleware: a state-changing request (other than a node's reports) that was not
    refused clears the cache, so what it changed about a credential holds at once in this
    process (a 5xx may have changed something too; a 4xx changed nothing)."""

    def __init__(self, app: ASGIApp, cache: AuthCache) -> None:
        self.app = app
        self.cache = cache

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] in QUERIES
            or scope["path"].startswith(AGENT_PREFIX)
        ):
            await self.app(scope, receive, send)
            return
        record = StatusRecorder(send)
        try:
            await self.app(scope, receive, record)
        finally:
            if not 400 <= record.status < 500:
                self.cache.clear()
