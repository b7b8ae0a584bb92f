"""Timestamps leave the controller as protobuf's own conversion would write them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from google.protobuf.timestamp_pb2 import Timestamp

from flame_controller.convert import ts


def test_a_datetime_becomes_the_timestamp_protobuf_makes_of_it() -> None:
    values = [
        datetime(1970, 1, 1, tzinfo=UTC),
        datetime(1969, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),  # before the epoch
        datetime(1901, 3, 4, 5, 6, 7, 1, tzinfo=UTC),
        datetime(2026, 12, 7, 22, 40, 1, 123_456, tzinfo=UTC),
        datetime(2026, 12, 7, 22, 40, 1, 123_456, tzinfo=timezone(timedelta(hours=-7))),
        datetime(2026, 12, 7, 22, 40, 1, 123_456),  # naive: UTC
        datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
    ]
    for value in values:
        expected = Timestamp()
        expected.FromDatetime(value)
        got = ts(value)
        assert got is not None
        assert (got.seconds, got.nanos) == (expected.seconds, expected.nanos), value
    assert ts(None) is None
