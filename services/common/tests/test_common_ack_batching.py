"""Batched acknowledgements (amqp/acks.py) against the real RabbitMQ: the frames the consumer sends, and what the
broker makes of them (every acknowledged message gone, no channel error, nothing acknowledged that did not finish)."""

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiormq
import pytest
from aio_pika.abc import AbstractIncomingMessage

from kubemta_common.amqp.acks import AckBatcher
from kubemta_common.amqp.broker import Broker
from kubemta_common.amqp.consumer import Consumer
from kubemta_common.amqp.publisher import Publisher
from kubemta_common.amqp.topology import HELD, ROUTE
from kubemta_common.errors import PermanentError
from tests.harness.broker_fixtures import started_broker
from tests.harness.queues import first_message
from tests.harness.rabbitmq import Vhost

pytestmark = pytest.mark.broker

Frame = tuple[str, Any, int, bool]
"""(kind "ack"/"reject", the aiormq channel, delivery tag, multiple (ack) or requeue (reject))."""


@pytest.fixture
def frames(monkeypatch: pytest.MonkeyPatch) -> list[Frame]:
    """Every basic.ack and basic.reject any aiormq channel sends, in order."""
    sent: list[Frame] = []
    ack, reject = aiormq.Channel.basic_ack, aiormq.Channel.basic_reject

    async def record_ack(self: aiormq.Channel, delivery_tag: int, multiple: bool = False, wait: bool = True) -> None:
        sent.append(("ack", self, delivery_tag, multiple))
        await ack(self, delivery_tag, multiple=multiple, wait=wait)

    async def record_reject(
        self: aiormq.Channel, delivery_tag: int, *, requeue: bool = True, wait: bool = True
    ) -> None:
        sent.append(("reject", self, delivery_tag, requeue))
        await reject(self, delivery_tag, requeue=requeue, wait=wait)

    monkeypatch.setattr(aiormq.Channel, "basic_ack", record_ack)
    monkeypatch.setattr(aiormq.Channel, "basic_reject", record_reject)
    return sent


@dataclass
class Gated:
    """A handler that holds each first delivery until the test releases its message id."""

    fail: set[str] = field(default_factory=set)
    gates: dict[str, asyncio.Event] = field(default_factory=dict)
    seen: list[tuple[str, int, bool]] = field(default_factory=list)
    """(message id, delivery tag, redelivered) of every delivery, as it arrived."""
    done: list[str] = field(default_factory=list)

    async def __call__(self, message: AbstractIncomingMessage) -> None:
        message_id = message.message_id or ""
        self.seen.append((message_id, message.delivery_tag or 0, bool(message.redelivered)))
        if not message.redelivered:
            await self.gates.setdefault(message_id, asyncio.Event()).wait()
        self.done.append(message_id)
        if message_id in self.fail:
            raise PermanentError("unprocessable")

    def release(self, *message_ids: str) -> None:
        for message_id in message_ids:
            self.gates.setdefault(message_id, asyncio.Event()).set()

    def tag(self, message_id: str) -> int:
        return next(tag for seen_id, tag, _ in self.seen if seen_id == message_id)


async def until(condition: Callable[[], bool], within: float = 10.0) -> None:
    """Wait (bounded) until `condition()` holds."""
    for _ in range(int(within / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met in time")


@dataclass
class Running:
    broker: Broker
    consumer: Consumer
    handler: Gated

    async def channel(self) -> aiormq.abc.AbstractChannel:
        queue = self.consumer._queue
        assert queue is not None
        return await queue.channel.get_underlay_channel()


@pytest.fixture
async def running(vhost: Vhost) -> AsyncIterator[Callable[[int], Any]]:
    """Start a consumer of `route` (prefetch 10) holding `count` published messages M1..Mn, each in its handler."""
    started: list[Running] = []

    async def start(count: int) -> Running:
        broker = await started_broker(vhost.url)
        publisher = Publisher(broker, 5)
        for number in range(1, count + 1):
            await publisher.publish_raw(ROUTE, b"x", message_id=f"M{number}", message_type="t")
        handler = Gated()
        consumer = Consumer(broker, ROUTE, handler, prefetch=10, retry_pause=0.0)
        started.append(Running(broker, consumer, handler))
        await consumer.start()
        await until(lambda: len(handler.seen) == count)
        assert [message_id for message_id, _, _ in handler.seen] == [f"M{n}" for n in range(1, count + 1)]
        return started[-1]

    yield start
    for run in started:
        if not run.broker.closed:  # the test did not stop it (it failed)
            await run.consumer.stop(5)
            await run.broker.close()


def acks(frames: list[Frame]) -> list[tuple[int, bool]]:
    return [(tag, multiple) for kind, _, tag, multiple in frames if kind == "ack"]


async def test_out_of_order_completions_are_acknowledged_together_below_the_lowest_unfinished(
    running: Callable[[int], Any], frames: list[Frame], vhost: Vhost
) -> None:
    run: Running = await running(6)
    tag = run.handler.tag
    run.handler.release("M2", "M3")  # above the unfinished M1: one by one, at once (they must not wait for M1)
    await until(lambda: len(acks(frames)) == 2)
    assert acks(frames) == [(tag("M2"), False), (tag("M3"), False)]
    run.handler.release("M1")
    await until(lambda: len(acks(frames)) == 3)
    assert acks(frames)[2] == (tag("M1"), True)
    run.handler.release("M4", "M5", "M6")  # all finished below them: one frame for the three
    await until(lambda: len(acks(frames)) == 4)
    assert acks(frames)[3] == (tag("M6"), True)
    channel = await run.channel()
    assert not channel.is_closed  # no tag the broker did not know
    await run.consumer.stop(5)
    await run.broker.close()
    assert vhost.queue_depths()[ROUTE] == 0  # all six settled, none came back


async def test_a_multiple_ack_passes_over_a_rejected_delivery(
    running: Callable[[int], Any], frames: list[Frame], vhost: Vhost
) -> None:
    run: Running = await running(5)
    run.handler.fail.add("M3")
    run.handler.release("M3")
    await until(lambda: len(frames) == 1)
    assert frames[0][0::2] == ("reject", run.handler.tag("M3"))  # rejected at once, alone
    run.handler.release("M1", "M2", "M4", "M5")
    await until(lambda: len(acks(frames)) == 1)
    await asyncio.sleep(0.2)
    assert acks(frames) == [(run.handler.tag("M5"), True)]  # one frame for four, over the rejected one
    assert not (await run.channel()).is_closed
    await run.consumer.stop(5)
    await run.broker.close()
    assert vhost.queue_depths()[ROUTE] == 0
    assert (await first_message(vhost.url, HELD)).message_id == "M3"  # dead-lettered: the reject was honoured


async def test_stop_sends_the_acknowledgements_still_pending(
    running: Callable[[int], Any], frames: list[Frame], vhost: Vhost, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def never(self: AckBatcher) -> None:
        return None

    monkeypatch.setattr(AckBatcher, "_flush_soon", never)  # nothing leaves before stop() flushes
    run: Running = await running(4)
    run.handler.release("M1", "M2", "M3", "M4")
    await until(lambda: len(run.handler.done) == 4)
    await asyncio.sleep(0.1)
    assert acks(frames) == []
    await run.consumer.stop(5)
    assert acks(frames) == [(run.handler.tag("M4"), True)]
    await run.broker.close()
    assert vhost.queue_depths()[ROUTE] == 0  # acknowledged before the connection closed


async def test_a_channel_closed_mid_batch_voids_its_tags_and_the_broker_redelivers(
    running: Callable[[int], Any], frames: list[Frame], vhost: Vhost
) -> None:
    run: Running = await running(4)
    run.handler.release("M1", "M2")
    await until(lambda: len(acks(frames)) == 1)
    old = await run.channel()
    # A channel error (an unknown tag, sent around the consumer): the broker closes the channel, with M3 and M4
    # unacknowledged on it; the robust channel reopens and consumes again.
    await old.basic_ack(9999)
    await until(lambda: old.is_closed)
    run.handler.release("M3", "M4")  # (their first handlers were cancelled with the channel)
    await until(lambda: sum(1 for _, _, redelivered in run.handler.seen if redelivered) == 2)
    await until(lambda: run.handler.done.count("M3") + run.handler.done.count("M4") >= 2)
    await until(lambda: any(channel is not old for _, channel, _, _ in frames))
    on_old = [(tag, multiple) for _, channel, tag, multiple in frames if channel is old]
    assert on_old[-1] == (9999, False)  # ours: nothing of the consumer's went to the closed channel after it
    assert all(tag <= run.handler.tag("M2") for tag, _ in on_old[:-1])  # M1 and M2 only, before it closed
    redelivered = {message_id for message_id, _, again in run.handler.seen if again}
    assert redelivered == {"M3", "M4"}  # M1 and M2 were acknowledged before; M3 and M4 came back
    await run.consumer.stop(5)
    await run.broker.close()
    assert vhost.queue_depths()[ROUTE] == 0


class FakeChannel:
    """An aiormq channel as the batcher uses it: open or closed, and the acknowledgements it was asked to send."""

    def __init__(self) -> None:
        self.is_closed = False
        self.sent: list[tuple[int, bool]] = []

    async def basic_ack(self, delivery_tag: int, multiple: bool = False, wait: bool = True) -> None:
        self.sent.append((delivery_tag, multiple))


async def test_acknowledgements_of_a_channel_that_closed_before_the_flush_are_dropped_not_sent_elsewhere() -> None:
    batcher = AckBatcher()
    old, new = FakeChannel(), FakeChannel()
    for tag in (1, 2):
        batcher.delivered(old, tag)  # type: ignore[arg-type]
    batcher.delivered(new, 1)  # type: ignore[arg-type]
    batcher.ack(old, 1)  # type: ignore[arg-type]
    batcher.ack(new, 1)  # type: ignore[arg-type]
    old.is_closed = True  # before the end of the turn
    await batcher.flush()
    assert (old.sent, new.sent) == ([], [(1, True)])
    batcher.ack(old, 2)  # type: ignore[arg-type]  # a handler that returned later: its channel is forgotten
    await batcher.flush()
    assert (old.sent, batcher.pending) == ([], 0)


async def test_a_delivery_left_unfinished_is_never_covered_by_a_multiple_ack() -> None:
    batcher = AckBatcher()
    channel = FakeChannel()
    for tag in range(1, 6):
        batcher.delivered(channel, tag)  # type: ignore[arg-type]
    for tag in (1, 2, 4, 5):  # 3 stays unfinished (a stopping consumer leaves it to the broker)
        batcher.ack(channel, tag)  # type: ignore[arg-type]
    await batcher.flush()
    assert channel.sent == [(2, True), (4, False), (5, False)]
