"""Conversions between protobuf Timestamps and datetimes."""

from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp


def now_timestamp() -> Timestamp:
    """The current time as a protobuf Timestamp."""
    stamp = Timestamp()
    stamp.FromDatetime(datetime.now(UTC))
    return stamp


def to_datetime(stamp: Timestamp) -> datetime:
    """A Timestamp as an aware UTC datetime."""
    return stamp.ToDatetime(tzinfo=UTC)


def age_seconds(stamp: Timestamp, now: datetime | None = None) -> float:
    """Seconds elapsed since `stamp`."""
    return ((now or datetime.now(UTC)) - to_datetime(stamp)).total_seconds()
