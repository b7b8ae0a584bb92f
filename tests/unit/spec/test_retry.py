"""Backoff delays of loops whose attempt count is stored (the controller's task restarts)."""

from __future__ import annotations

from flame_spec.retry import backoff_delay


def test_backoff_delay_grows_with_the_retry_and_stays_under_the_cap() -> None:
    for retry, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (10, 5.0)]:
        delays = [backoff_delay(retry, initial=0.5, maximum=5.0) for _ in range(200)]
        assert all(0.0 <= d <= ceiling for d in delays), (retry, max(delays))
        assert max(delays) > ceiling / 2  # full jitter spreads over the whole range
        assert len(set(delays)) > 100  # not in lock step


def test_backoff_delay_treats_retry_zero_as_the_first() -> None:
    assert all(backoff_delay(0, initial=0.1, maximum=1.0) <= 0.1 for _ in range(50))
