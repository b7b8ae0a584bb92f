"""Slow down guessing: a client whose credentials failed too often recently gets 429 for a while.

Counted per client address, over a sliding window; a success does not reset the count (an
attacker holding one valid token could otherwise interleave guesses). The table is bounded: the
oldest addresses are forgotten first. Per apiserver process, which is enough to make guessing a
256-bit token hopeless and an enrolment-token sweep slow.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable

from flame_apiserver.problems import ApiProblem

MAX_CLIENTS = 100_000


class AuthThrottle:
    def __init__(
        self, max_failures: int, window: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_failures = max_failures
        self.window = window
        self._clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

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

    def check(self, client: str) -> None:
        """Raise 429 (with Retry-After) while ``client`` is over its failure budget."""
        times = self._recent(client)
        if len(times) >= self.max_failures:
            wait = max(1, math.ceil(times[0] + self.window - self._clock()))
            raise ApiProblem(
                429,
                "too_many_requests",
                f"too many failed authentications from this address; retry in {wait} s",
                {"Retry-After": str(wait)},
            )

    def failed(self, client: str) -> None:
        times = self._recent(client)
        times.append(self._clock())
        self._failures[client] = times
        self._failures.move_to_end(client)
        while len(self._failures) > MAX_CLIENTS:
            self._failures.popitem(last=False)
