"""The arrival time of an accepted message as its protobuf Timestamp."""

from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def stamp(stamp: Timestamp, arrival: datetime) -> None:
    """Set `stamp` to the aware datetime `arrival`: what `stamp.FromDatetime(arrival)` sets, without protobuf's
    pure-Python detour through a struct_time and calendar.timegm (~1.9 -> ~0.4 us a message)."""
    since = arrival - _EPOCH
    stamp.seconds = since.days * 86_400 + since.seconds
    stamp.nanos = since.microseconds * 1000
