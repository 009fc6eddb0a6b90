"""A message the broker refuses as too large gets `552 5.3.4`, and no other session notices.

A private RabbitMQ node of this test's own runs with `max_message_size = 2 MiB` (RabbitMQ 4.x's
default is 16 MiB, 3.x's 128 MiB), lower than what the ingress is told (KUBEMTA_BROKER_MAX_MESSAGE_SIZE
16 MiB, the default): the broker itself refuses the large message by closing the channel it came on.
Before, that was the one shared publishing channel, so every session's publish failed with it (451);
now a large body travels on a channel of its own. A message over the configured limit never reaches
the broker at all (services/common/tests/test_common_publisher_size.py).
"""

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aio_pika
import pytest

from kubemta_common.amqp.topology import INBOUND, large
from tests.e2e.conftest import SmtpOutcome, make_message, send
from tests.harness.ports import free_port
from tests.harness.rabbitmq import BrokerNode, start_private_node
from tests.harness.stack import Stack

pytestmark = [pytest.mark.broker, pytest.mark.e2e]

BROKER_LIMIT = 2 * 1024 * 1024
SENDER = "app@sender.test"
SMALL_SESSIONS = 12


@pytest.fixture(scope="module")
def small_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerNode]:
    node = start_private_node(tmp_path_factory.mktemp("rabbitmq-2mib"), f"max_message_size = {BROKER_LIMIT}\n")
    try:
        yield node
    finally:
        node.shutdown()


@pytest.fixture
async def ingress(small_broker: BrokerNode, tmp_path: Path) -> AsyncIterator[tuple[Stack, str, BrokerNode, str]]:
    vhost = small_broker.create_vhost()
    smtp_port = free_port()
    stack = Stack(
        tmp_path,
        {
            "KUBEMTA_AMQP_URL": vhost.url,
            "KUBEMTA_SMTP_LISTEN": f"127.0.0.1:{smtp_port}",
            "KUBEMTA_HOSTNAME": "mta.kubemta.test",
            "KUBEMTA_RELAY_NETWORKS": "127.0.0.0/8",
            "KUBEMTA_MAX_MESSAGE_SIZE": str(8 * 1024 * 1024),
            "KUBEMTA_PUBLISH_TIMEOUT": "5s",
        },
    )
    try:
        await stack.start(("ingress",))
        yield stack, f"127.0.0.1:{smtp_port}", small_broker, vhost.name
    finally:
        await stack.stop()
        vhost.delete()


def sized(subject: str, size: int) -> bytes:
    """A message of about `size` bytes in 76-character lines."""
    line = b"x" * 76 + b"\r\n"
    return make_message(SENDER, ["bob@rcpt.test"], subject) + line * (size // len(line))


async def inbound_depth(url: str) -> int:
    """Messages in `inbound` and its large lane, as the queues count them (passive declarations' answers)."""
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        total = 0
        for name in (INBOUND, large(INBOUND)):
            queue = await channel.declare_queue(name, passive=True)
            total += int(queue.declaration_result.message_count or 0)
        return total
    finally:
        await connection.close()


async def test_the_broker_refusing_a_large_message_gets_552_and_no_other_session_notices(ingress) -> None:
    stack, server, node, vhost = ingress
    small = [sized(f"small {n}", 2000) for n in range(SMALL_SESSIONS)]
    outcomes: list[SmtpOutcome] = await asyncio.gather(
        send(server, SENDER, ["bob@rcpt.test"], sized("too large for this broker", 3 * 1024 * 1024)),
        *(send(server, SENDER, ["bob@rcpt.test"], message) for message in small),
    )
    large, *others = outcomes
    assert large.data is not None and large.data[0] == 552, large
    assert large.data[1].startswith(b"5.3.4 "), large
    assert [outcome.data[0] if outcome.data else None for outcome in others] == [250] * SMALL_SESSIONS

    # The shared channel is intact: the next messages, small and just under the broker's limit, are queued.
    after = await send(server, SENDER, ["bob@rcpt.test"], sized("after", 2000))
    near_limit = await send(server, SENDER, ["bob@rcpt.test"], sized("1.5 MiB", 1536 * 1024))
    assert (after.data and after.data[0], near_limit.data and near_limit.data[0]) == (250, 250)
    assert await inbound_depth(node.url(vhost)) == SMALL_SESSIONS + 2
    rejected = await stack.metric("ingress", "kubemta_messages_rejected_total", reason="message_too_big")
    assert rejected == 1


async def test_an_ingress_told_a_message_size_the_broker_cannot_carry_refuses_to_start(tmp_path: Path) -> None:
    stack = Stack(
        tmp_path,
        {"KUBEMTA_MAX_MESSAGE_SIZE": str(20 * 1024 * 1024), "KUBEMTA_SMTP_LISTEN": f"127.0.0.1:{free_port()}"},
    )
    with pytest.raises(RuntimeError, match="exited with 2") as failed:
        await stack.start(("ingress",), within=30)
    assert "KUBEMTA_BROKER_MAX_MESSAGE_SIZE" in str(failed.value)
    await stack.stop()
