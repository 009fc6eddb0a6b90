"""A delivery held past RabbitMQ's consumer timeout: the mail is delivered once, and the worker goes on.

RabbitMQ takes a delivery back from a consumer that has not acknowledged it within `consumer_timeout` (30 minutes
by default): 3.x and 4.0-4.2 close the consumer's channel with PRECONDITION_FAILED, 4.3 cancels the consumer
(`basic.cancel`). Either way the job returns to `deliver` while the worker's attempt may still be running. This
test's own node runs with a 2 s timeout, checked every 250 ms (`channel_tick_interval`, `quorum_tick_interval`);
a peer holds the reply to the first message's final dot for longer than that.

On RabbitMQ 4.3.6 (`make test-rabbitmq`) this failed before the consumer consumed again by itself
(consumer.py): aio-pika consumed again with the cancelled tag, the broker closed the connection for it, and the
worker never reconnected. `make test` runs it on this machine's broker (3.10: the closed channel).
"""

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from kubemta_common.amqp.topology import DELIVER, HELD
from tests.e2e.conftest import MailWorld, make_message, send
from tests.e2e.test_pipeline import SENDER, eventually
from tests.harness.ports import free_port
from tests.harness.rabbitmq import BrokerNode, Vhost, start_private_node
from tests.harness.stack import Stack

pytestmark = [pytest.mark.broker, pytest.mark.e2e]

CONSUMER_TIMEOUT_MS = 2000
TICKS = "[{rabbit, [{channel_tick_interval, 250}, {quorum_tick_interval, 250}]}].\n"
SLOW_REPLY = 10.0
"""Seconds the peer holds the first message's final reply: the broker's timeout (2 s) and its check fire long
before, even on a loaded machine."""


@pytest.fixture(scope="module")
def impatient_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerNode]:
    node = start_private_node(
        tmp_path_factory.mktemp("rabbitmq-consumer-timeout"),
        f"consumer_timeout = {CONSUMER_TIMEOUT_MS}\n",
        advanced=TICKS,
    )
    try:
        yield node
    finally:
        node.shutdown()


@pytest.fixture
async def impatient_stack(impatient_broker: BrokerNode, tmp_path: Path) -> AsyncIterator[tuple[Stack, Vhost]]:
    vhost = impatient_broker.create_vhost()
    stack = Stack(tmp_path, {"KUBEMTA_AMQP_URL": vhost.url})
    try:
        yield stack, vhost
    finally:
        await stack.stop()
        vhost.delete()


async def test_a_delivery_past_the_consumer_timeout_is_delivered_once_and_the_worker_goes_on(
    impatient_stack: tuple[Stack, Vhost], world: MailWorld
) -> None:
    stack, vhost = impatient_stack
    peer = world.peer("mx1", data_delay=SLOW_REPLY)
    await peer.start()
    smtp = f"127.0.0.1:{free_port()}"
    stack.env.update(world.env(smtp_listen=smtp))
    await stack.start()

    slow = await send(smtp, SENDER, ["alice@mx.e2e.test"], make_message(SENDER, ["alice@mx.e2e.test"], "slow"))
    assert slow.data is not None and slow.data[0] == 250, slow

    async def slow_reply_pending() -> bool:
        return peer.in_data == 1

    await eventually(slow_reply_pending, within=20, what="the peer holding the first message's final reply")
    held_since = asyncio.get_running_loop().time()
    peer.data_delay = 0.0  # every later transaction is answered at once
    await asyncio.sleep(CONSUMER_TIMEOUT_MS / 1000 + 1.5)  # the broker took the job back meanwhile

    after = await send(smtp, SENDER, ["bob@mx.e2e.test"], make_message(SENDER, ["bob@mx.e2e.test"], "after"))
    assert after.data is not None and after.data[0] == 250, after

    await peer.wait_for_messages(2, timeout=30)
    # until the held reply would have been sent: a first attempt still running would deliver a second copy by then
    await asyncio.sleep(max(0.0, held_since + SLOW_REPLY + 1.0 - asyncio.get_running_loop().time()))
    subjects = sorted(message.content.split(b"Subject: ", 1)[1].split(b"\r\n", 1)[0] for message in peer.messages)
    assert subjects == [b"after", b"slow"], subjects  # the slow one once: its first attempt was given up
    log = stack.log("delivery-worker")
    assert "consuming deliver again" in log  # on the reopened channel (3.x, 4.0-4.2) or after the cancel (4.3)
    said_why = ("the broker cancelled the consumer of deliver", "delivery acknowledgement on channel")
    assert any(words in log for words in said_why), "no warning said why (docs/runbooks.md quotes them)"

    async def settled() -> bool:  # ready or unacknowledged
        return vhost.queue_depths()[DELIVER] == 0

    await eventually(settled, within=20, what="`deliver` to be empty")
    assert vhost.queue_depths()[HELD] == 0
