"""Retrying, written once for the SDK and the services alike: capped exponential backoff with
full jitter (tenacity's ``wait_random_exponential``), so many tasks that lose their peer at
once do not come back in lock step.

* :func:`retrying` — call something until it succeeds, a non-retryable error, or a deadline::

      async for attempt in retrying(initial=0.05, maximum=1.0, deadline=30, retry=is_transient):
          with attempt:
              await register()

* :class:`Backoff` — the delays of a loop that runs for ever and starts over after a success.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import tenacity


def _jitter(initial: float, maximum: float) -> tenacity.wait.wait_base:
    return tenacity.wait_random_exponential(multiplier=initial, max=maximum)


def retrying(
    *,
    initial: float,
    maximum: float,
    deadline: float | None = None,
    retry: Callable[[BaseException], bool] = lambda exc: True,
    on_retry: Callable[[BaseException, float], None] | None = None,
) -> tenacity.AsyncRetrying:
    """Attempts until one succeeds; ``retry(exc)`` False re-raises ``exc`` at once, and after
    ``deadline`` seconds the last error is re-raised. No sleep runs past the deadline."""
    end = None if deadline is None else time.monotonic() + deadline
    jitter = _jitter(initial, maximum)

    def wait(state: tenacity.RetryCallState) -> float:
        delay = float(jitter(state))
        return delay if end is None else max(0.0, min(delay, end - time.monotonic()))

    def stop(state: tenacity.RetryCallState) -> bool:
        return end is not None and time.monotonic() >= end

    def before_sleep(state: tenacity.RetryCallState) -> None:
        if on_retry is not None and state.outcome is not None and state.next_action is not None:
            exc = state.outcome.exception()
            if exc is not None:
                on_retry(exc, state.next_action.sleep)

    return tenacity.AsyncRetrying(
        wait=wait,
        stop=stop,
        retry=tenacity.retry_if_exception(retry),
        before_sleep=before_sleep,
        reraise=True,
    )


class Backoff:
    """Successive delays for a loop that runs for ever (reconnect, resync): each :meth:`next`
    waits longer, with jitter, up to ``maximum``; :meth:`reset` after a success."""

    def __init__(self, initial: float, maximum: float) -> None:
        self._wait = _jitter(initial, maximum)
        self._state = tenacity.RetryCallState(None, None, (), {})  # type: ignore[arg-type]

    def next(self) -> float:
        delay = float(self._wait(self._state))
        self._state.attempt_number += 1
        return delay

    def reset(self) -> None:
        self._state.attempt_number = 1


def backoff_delay(retry: int, initial: float, maximum: float) -> float:
    """The jittered delay before retry number ``retry`` (1 for the first) of a loop whose
    attempt count is stored rather than held in memory: up to ``initial * 2**(retry - 1)``,
    capped at ``maximum``."""
    state = tenacity.RetryCallState(None, None, (), {})  # type: ignore[arg-type]
    state.attempt_number = max(1, retry)
    return float(_jitter(initial, maximum)(state))
