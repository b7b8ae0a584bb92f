"""Slow down guessing: an address whose credentials failed too often recently gets 429 for new
credentials for a while.

Failures are counted per client address over a sliding window; a success does not reset the
count (an attacker holding one valid token could otherwise interleave guesses). While an address
is over its budget, only credentials that already succeeded recently pass: everyone behind one
address (all of a single-host stack is 127.0.0.1) keeps working while someone there guesses,
and the guesser gets no answers. The tables are bounded, oldest forgotten first. Per apiserver
process, which is enough to make guessing a 256-bit token hopeless and an enrolment-token sweep
slow.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable

from flame_apiserver.problems import ApiProblem

MAX_CLIENTS = 100_000
GOOD_FOR = 3600.0  # seconds a credential that succeeded passes an address's throttle


class AuthThrottle:
    def __init__(
        self, max_failures: int, window: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_failures = max_failures
        self.window = window
        self._clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._good: OrderedDict[bytes, float] = OrderedDict()  # credential digest -> last success

    def _recent(self, client: str) -> deque[float]:
        times = self._failures.get(client)
        if times is None:
            return deque()
        horizon = self._clock() - self.window
        while times and times[0] <= horizon:
            times.popleft()
        if not times:
            del self._failures[client]
        return times

    @staticmethod
    def _digest(credential: str) -> bytes:
        return hashlib.sha256(credential.encode()).digest()

    def _known_good(self, credential: str) -> bool:
        at = self._good.get(self._digest(credential))
        return at is not None and at > self._clock() - GOOD_FOR

    def check(self, client: str, credential: str) -> None:
        """Raise 429 (with Retry-After) while ``client`` is over its failure budget, unless
        ``credential`` succeeded recently."""
        times = self._recent(client)
        if len(times) >= self.max_failures and not self._known_good(credential):
            wait = max(1, math.ceil(times[0] + self.window - self._clock()))
            raise ApiProblem(
                429,
                "too_many_requests",
                f"too many failed authentications from this address; retry in {wait} s",
                {"Retry-After": str(wait)},
            )

    def succeeded(self, credential: str) -> None:
        digest = self._digest(credential)
        self._good[digest] = self._clock()
        self._good.move_to_end(digest)
        while len(self._good) > MAX_CLIENTS:
            self._good.popitem(last=False)

    def failed(self, client: str) -> None:
        times = self._recent(client)
        times.append(self._clock())
        self._failures[client] = times
        self._failures.move_to_end(client)
        while len(self._failures) > MAX_CLIENTS:
            self._failures.popitem(last=False)
