"""arrival_time.stamp sets a Timestamp exactly as protobuf's FromDatetime does, without its struct_time detour."""

from datetime import UTC, datetime, timedelta, timezone

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from kubemta_ingress import arrival_time

MOMENTS = [
    datetime(1970, 1, 1, tzinfo=UTC),
    datetime(2026, 12, 5, 19, 12, 32, 999_999, tzinfo=UTC),
    datetime(2024, 2, 29, 23, 59, 59, 1, tzinfo=UTC),
    datetime(1969, 12, 31, 23, 59, 59, 500_000, tzinfo=UTC),  # before the epoch: seconds floor, nanos positive
    datetime(2026, 6, 1, 2, 0, 0, 123_456, tzinfo=timezone(timedelta(hours=2))),  # not UTC: the same instant
    datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
]


@pytest.mark.parametrize("moment", MOMENTS, ids=str)
def test_the_stamp_is_from_datetimes(moment: datetime) -> None:
    expected, stamped = Timestamp(), Timestamp()
    expected.FromDatetime(moment)
    arrival_time.stamp(stamped, moment)
    assert (stamped.seconds, stamped.nanos) == (expected.seconds, expected.nanos)


def test_the_stamp_of_now_is_from_datetimes() -> None:
    now = datetime.now(UTC)
    expected, stamped = Timestamp(), Timestamp()
    expected.FromDatetime(now)
    arrival_time.stamp(stamped, now)
    assert stamped == expected
