"""The suppression appender without a stream: `suppress` never blocks or raises (a hostile address is skipped, the
buffer drops its oldest change beyond its bound and counts it), and what waited is published in order once the
stream takes it; and the ingress builds its check only when it is on and a tracker is configured."""

import asyncio
from typing import Any

from prometheus_client import REGISTRY

from kubemta.v1 import events_pb2
from kubemta_common.errors import PublishFailed
from kubemta_common.events.suppression_log import SuppressionLog
from kubemta_ingress.settings import IngressSettings
from kubemta_ingress.suppression_check import SuppressionCheck, build_suppression_check
from tests.harness.fake_publisher import FakePublisher


class ClosedStream(FakePublisher):
    """A publisher whose confirms fail until `open` is set; the changes it confirmed, decoded, in `changes`."""

    def __init__(self) -> None:
        super().__init__(error=PublishFailed("the stream is not there"))

    @property
    def open(self) -> bool:
        return self.error is None

    @open.setter
    def open(self, value: bool) -> None:
        self.error = None if value else PublishFailed("the stream is not there")

    @property
    def changes(self) -> list[events_pb2.SuppressionChange]:
        return [events_pb2.SuppressionChange.FromString(published.body) for published in self.raw]


def _dropped() -> float:
    return REGISTRY.get_sample_value("kubemta_suppression_changes_dropped_total") or 0.0


async def test_suppress_never_blocks_drops_the_oldest_and_publishes_in_order_later() -> None:
    stream = ClosedStream()
    log = SuppressionLog(stream, actor="queue-manager", ttl=60.0, buffer=3)
    log.start()
    before = _dropped()
    for n in range(5):
        log.suppress(f"user{n}@example.org", reason="invalid_recipient", queue_id=f"Q{n}", diagnostic="550 5.1.1")
    log.suppress("bob@example.org\r\nRCPT TO:<x@y>", reason="invalid_recipient", queue_id="Q9", diagnostic="")
    assert log.buffered == 3 and _dropped() - before == 2
    stream.open = True
    async with asyncio.timeout(10):
        while True:
            if not log.buffered:
                break
            await asyncio.sleep(0.05)
    await log.close(1.0)
    published = stream.changes
    assert [record.address for record in published] == ["user2@example.org", "user3@example.org", "user4@example.org"]
    assert {raw.routing_key for raw in stream.raw} == {"suppressions"}
    first = published[0]
    assert (first.suppressed, first.source, first.actor, first.queue_id) == (True, "bounce", "queue-manager", "Q2")
    assert first.expires.ToSeconds() - first.time.ToSeconds() == 60
    assert len({record.change_id for record in published}) == 3


async def test_append_says_whether_the_stream_confirmed() -> None:
    stream = ClosedStream()
    log = SuppressionLog(stream, actor="tracker", ttl=60.0)
    record = events_pb2.SuppressionChange(change_id="c1", address="bob@example.org", suppressed=False)
    assert not await log.append(record)
    stream.open = True
    assert await log.append(record)


def test_the_ingress_checks_only_when_on_and_a_tracker_is_there() -> None:
    tracker: Any = object()
    assert isinstance(build_suppression_check(IngressSettings(), tracker), SuppressionCheck)
    assert build_suppression_check(IngressSettings(suppression_check=False), tracker) is None
    assert build_suppression_check(IngressSettings(), None) is None
