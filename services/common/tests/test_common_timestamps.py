"""now_timestamp: the current time to the microsecond, read from time.time_ns (no datetime round trip);
set_datetime: a Timestamp set exactly as protobuf's FromDatetime does, without its struct_time detour."""

import time
from datetime import UTC, datetime, timedelta, timezone

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from kubemta_common.timestamps import age_seconds, now_timestamp, set_datetime, to_datetime


def test_now_timestamp_is_the_clock_truncated_to_the_microsecond(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(time, "time_ns", lambda: 1_765_000_000_123_456_789)
    stamp = now_timestamp()
    assert (stamp.seconds, stamp.nanos) == (1_765_000_000, 123_456_000)
    assert to_datetime(stamp) == datetime(2025, 12, 6, 5, 46, 40, 123456, tzinfo=UTC)


def test_now_timestamp_matches_from_datetime() -> None:
    before = datetime.now(UTC)
    stamp = now_timestamp()
    after = datetime.now(UTC)
    assert stamp.nanos % 1000 == 0
    assert before <= to_datetime(stamp) <= after
    assert stamp.ToJsonString().endswith("Z")


def test_age_seconds_of_a_fresh_stamp() -> None:
    stamp = now_timestamp()
    assert age_seconds(stamp, to_datetime(stamp)) == 0.0


@pytest.mark.parametrize(
    ("seconds", "nanos"),
    [(0, 0), (1_765_000_000, 999_999_999), (-1, 1), (-62_135_596_800, 0), (253_402_300_799, 999_999_000)],
)
def test_to_datetime_equals_protobufs(seconds: int, nanos: int) -> None:
    stamp = Timestamp(seconds=seconds, nanos=nanos)
    converted = to_datetime(stamp)
    assert converted == stamp.ToDatetime(tzinfo=UTC)
    assert converted.tzinfo is UTC


@pytest.mark.parametrize(
    ("seconds", "nanos"), [(0, -1), (0, 1_000_000_000), (253_402_300_800, 0), (-62_135_596_801, 0)]
)
def test_to_datetime_of_an_invalid_stamp_raises_as_protobuf_does(seconds: int, nanos: int) -> None:
    with pytest.raises(ValueError):
        to_datetime(Timestamp(seconds=seconds, nanos=nanos))


MOMENTS = [
    datetime(1970, 1, 1, tzinfo=UTC),
    datetime(2026, 12, 5, 19, 12, 32, 999_999, tzinfo=UTC),
    datetime(2024, 2, 29, 23, 59, 59, 1, tzinfo=UTC),
    datetime(1969, 12, 31, 23, 59, 59, 500_000, tzinfo=UTC),  # before the epoch: seconds floor, nanos positive
    datetime(2026, 6, 1, 2, 0, 0, 123_456, tzinfo=timezone(timedelta(hours=2))),  # not UTC: the same instant
    datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
]


@pytest.mark.parametrize("moment", MOMENTS, ids=str)
def test_set_datetime_is_from_datetime(moment: datetime) -> None:
    expected, stamped = Timestamp(), Timestamp()
    expected.FromDatetime(moment)
    set_datetime(stamped, moment)
    assert (stamped.seconds, stamped.nanos) == (expected.seconds, expected.nanos)


def test_set_datetime_of_now_is_from_datetime() -> None:
    now = datetime.now(UTC)
    expected, stamped = Timestamp(), Timestamp()
    expected.FromDatetime(now)
    set_datetime(stamped, now)
    assert stamped == expected
