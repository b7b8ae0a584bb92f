"""Protobuf timestamps and aware UTC datetimes, both ways, by integer arithmetic.

Protobuf's own ``FromDatetime`` and ``ToDatetime`` are pure Python and 3.5x slower; a job's
metrics are thousands of timestamps per request. The values are protobuf's (the tests compare).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from google.protobuf.timestamp_pb2 import Timestamp

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_timestamp(value: datetime) -> Timestamp:
    """``Timestamp.FromDatetime(value)``: a naive value is UTC."""
    delta = (value if value.tzinfo is not None else value.replace(tzinfo=UTC)) - EPOCH
    return Timestamp(seconds=delta.days * 86_400 + delta.seconds, nanos=delta.microseconds * 1_000)


def to_datetime(value: Timestamp) -> datetime:
    """``value.ToDatetime(tzinfo=UTC)``."""
    return EPOCH + timedelta(seconds=value.seconds, microseconds=value.nanos // 1_000)
