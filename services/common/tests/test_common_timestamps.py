"""now_timestamp: the current time to the microsecond, read from time.time_ns (no datetime round trip)."""

import time
from datetime import UTC, datetime

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from kubemta_common.timestamps import age_seconds, now_timestamp, to_datetime


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
