"""The suppression appender without a stream: `suppress` never blocks or raises (a hostile address is skipped, the
buffer drops its oldest change beyond its bound and counts it), and what waited is published in order once the
stream takes it; and the ingress builds its check only when it is on and a tracker is configured."""

import asyncio
from typing import Any, cast

from prometheus_client import REGISTRY

from kubemta.v1 import events_pb2
from kubemta_common.amqp.broker import Broker
from kubemta_common.events.suppression_log import SuppressionLog
from kubemta_ingress.settings import IngressSettings
from kubemta_ingress.suppression_check import SuppressionCheck, build_suppression_check


class Exchange:
    """An exchange that refuses publishes until `open` is set, then records them."""

    def __init__(self) -> None:
        self.open = False
        self.published: list[events_pb2.SuppressionChange] = []
        self.routing_keys: set[str] = set()

    async def publish(self, message: Any, routing_key: str, *, mandatory: bool) -> None:
        if not self.open:
            raise ConnectionError("the stream is not there")
        assert mandatory
        self.routing_keys.add(routing_key)
        record = events_pb2.SuppressionChange()
        record.ParseFromString(message.body)
        self.published.append(record)


class FakeBroker:
    def __init__(self) -> None:
        self.exchange = Exchange()


def _dropped() -> float:
    return REGISTRY.get_sample_value("kubemta_suppression_changes_dropped_total") or 0.0


async def test_suppress_never_blocks_drops_the_oldest_and_publishes_in_order_later() -> None:
    broker = FakeBroker()
    log = SuppressionLog(cast(Broker, broker), actor="queue-manager", ttl=60.0, publish_timeout=1.0, buffer=3)
    log.start()
    before = _dropped()
    for n in range(5):
        log.suppress(f"user{n}@example.org", reason="invalid_recipient", queue_id=f"Q{n}", diagnostic="550 5.1.1")
    log.suppress("bob@example.org\r\nRCPT TO:<x@y>", reason="invalid_recipient", queue_id="Q9", diagnostic="")
    assert log.buffered == 3 and _dropped() - before == 2
    broker.exchange.open = True
    async with asyncio.timeout(10):
        while True:
            if not log.buffered:
                break
            await asyncio.sleep(0.05)
    await log.close(1.0)
    published = broker.exchange.published
    assert [record.address for record in published] == ["user2@example.org", "user3@example.org", "user4@example.org"]
    assert broker.exchange.routing_keys == {"suppressions"}
    first = published[0]
    assert (first.suppressed, first.source, first.actor, first.queue_id) == (True, "bounce", "queue-manager", "Q2")
    assert first.expires.ToSeconds() - first.time.ToSeconds() == 60
    assert len({record.change_id for record in published}) == 3


async def test_append_says_whether_the_stream_confirmed() -> None:
    broker = FakeBroker()
    log = SuppressionLog(cast(Broker, broker), actor="tracker", ttl=60.0, publish_timeout=1.0)
    record = events_pb2.SuppressionChange(change_id="c1", address="bob@example.org", suppressed=False)
    assert not await log.append(record)
    broker.exchange.open = True
    assert await log.append(record)


def test_the_ingress_checks_only_when_on_and_a_tracker_is_there() -> None:
    tracker: Any = object()
    assert isinstance(build_suppression_check(IngressSettings(), tracker), SuppressionCheck)
    assert build_suppression_check(IngressSettings(suppression_check=False), tracker) is None
    assert build_suppression_check(IngressSettings(), None) is None
