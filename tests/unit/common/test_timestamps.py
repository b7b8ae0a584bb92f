"""Timestamps convert both ways exactly as protobuf's own conversions do."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from google.protobuf.timestamp_pb2 import Timestamp

from flame_service.timestamps import to_datetime, to_timestamp


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
        got = to_timestamp(value)
        assert (got.seconds, got.nanos) == (expected.seconds, expected.nanos), value


def test_a_timestamp_becomes_the_datetime_protobuf_makes_of_it() -> None:
    for seconds, nanos in [
        (0, 0),
        (-1, 999_999_999),  # before the epoch
        (-2_100_000_000, 1),  # nanos below a microsecond are dropped
        (1_796_683_201, 123_456_789),
        (253_402_300_799, 999_999_999),
    ]:
        value = Timestamp(seconds=seconds, nanos=nanos)
        got = to_datetime(value)
        assert got == value.ToDatetime(tzinfo=UTC) and got.tzinfo == UTC, (seconds, nanos)
