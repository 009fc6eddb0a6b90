"""The `dsn` stage against the real RabbitMQ: a single active consumer groups one message's requests, and a
replica that takes over after a crash groups them again (nothing lost, still one DSN); a message's success
requests (delivered and relayed) make one report, apart from its bounce, and the RFC 3461 fields survive the bus."""

import asyncio

import aio_pika
import pytest

from kubemta.v1 import message_pb2
from kubemta_common.amqp import stages
from kubemta_common.amqp.broker import Broker
from kubemta_common.amqp.consumer import Consumer
from kubemta_common.amqp.publisher import Publisher
from kubemta_common.amqp.topology import DSN, INBOUND
from kubemta_queue_manager.dsn_batcher import DsnBatcher
from tests.harness.dsn_reader import read_dsn
from tests.harness.ingress_kit import eventually
from tests.harness.rabbitmq import Vhost

pytestmark = pytest.mark.broker


def request(rcpt: str) -> message_pb2.DsnRequest:
    made = message_pb2.DsnRequest(
        queue_id="QMULTI",
        sender="alice@example.com",
        action=message_pb2.DSN_ACTION_FAILED,
        recipients=[message_pb2.DsnRecipient(recipient=rcpt, status="5.1.1", smtp_code=550, diagnostic="unknown")],
        original_headers=b"Subject: to three domains\r\n\r\n",
        job_id=f"QMULTI.{rcpt.partition('@')[2]}",
    )
    made.arrival_time.FromSeconds(1_700_000_000)
    made.last_attempt.FromSeconds(1_700_000_060)
    return made


class Replica:
    """One queue-manager's dsn consumer: a broker connection, a publisher and a batcher."""

    def __init__(self, url: str, window: float) -> None:
        self.broker = Broker(url, name="dsn-test", retry_delays=(1.0,), reconnect_interval=0.2)
        self.publisher = Publisher(self.broker, 5)
        self.batcher = DsnBatcher(self.publisher, "mx.kubemta.test", window=window, max_held=100)
        self.seen: list[str] = []
        self.consumer = Consumer(self.broker, DSN, self.handle, prefetch=100)

    async def handle(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        parsed = message_pb2.DsnRequest.FromString(message.body)
        self.seen.append(parsed.recipients[0].recipient)
        await self.batcher.add(parsed)

    async def start(self) -> None:
        runner = asyncio.create_task(self.broker.run())
        async with asyncio.timeout(20):
            await self.broker.wait_ready()
        await runner
        await self.consumer.start()


async def inbound_dsns(url: str, within: float) -> list[message_pb2.AcceptedMessage]:
    """Every message in `inbound` once it holds at least one, after a short settle (bounded)."""
    connection = await aio_pika.connect(url)
    found: list[message_pb2.AcceptedMessage] = []
    try:
        channel = await connection.channel()
        queue = await channel.get_queue(INBOUND)
        async with asyncio.timeout(within):
            while not found:
                while (message := await queue.get(fail=False, no_ack=True)) is not None:
                    found.append(message_pb2.AcceptedMessage.FromString(message.body))
                await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)  # anything sent right after would be here by now
        while (message := await queue.get(fail=False, no_ack=True)) is not None:
            found.append(message_pb2.AcceptedMessage.FromString(message.body))
    finally:
        await connection.close()
    return found


async def test_requests_held_by_a_crashed_replica_become_one_dsn_at_the_next(vhost: Vhost) -> None:
    first = Replica(vhost.url, window=3600.0)  # would hold them for an hour
    second = Replica(vhost.url, window=0.5)
    await first.start()
    await second.start()
    try:
        producer = Publisher(first.broker, 5)
        rcpts = ["bob@one.example", "carol@two.example", "dave@three.example"]
        for rcpt in rcpts:
            await producer.publish(stages.DSN, request(rcpt), message_id=rcpt)
        await eventually(lambda: first.batcher.held == 3, within=10)
        assert second.seen == []  # single active consumer: the other replica gets nothing while the first lives

        await first.broker.close()  # the first replica dies holding them, unacknowledged
        dsns = await inbound_dsns(vhost.url, within=20)
        assert len(dsns) == 1
        text = dsns[0].content.decode()
        assert [line for line in text.splitlines() if line.startswith("Final-Recipient:")] == [
            f"Final-Recipient: rfc822; {rcpt}" for rcpt in rcpts
        ]
        assert sorted(second.seen) == sorted(rcpts)
        await eventually(lambda: second.batcher.held == 0, within=10)  # sent, and every request acknowledged with it
    finally:
        await second.consumer.stop(1)
        await second.broker.close()
        await first.broker.close()


def success_request(rcpt: str, action: "message_pb2.DsnAction.ValueType") -> message_pb2.DsnRequest:
    made = request(rcpt)
    made.action = action
    made.recipients[0].status, made.recipients[0].diagnostic = "2.0.0", "2.0.0 Ok"
    made.recipients[0].smtp_code = 250
    return made


async def test_one_message_gets_one_success_report_and_one_bounce_with_its_dsn_parameters(vhost: Vhost) -> None:
    """Through the real broker: the success requests (delivered, relayed) of one message meet in one report; its
    failure, with ENVID, ORCPT, its class and the whole message (RET=FULL), is a DSN of its own."""
    replica = Replica(vhost.url, window=0.5)
    await replica.start()
    try:
        failed = request("carol@two.example")
        failed.envid = "ENV-42"
        failed.original_content = b"Subject: to three domains\r\n\r\nthe whole message\r\n"
        entry = failed.recipients[0]
        entry.orcpt_type, entry.orcpt_address, entry.bounce_class, entry.hard = (
            "rfc822",
            "Carol@two.example",
            "invalid_recipient",
            True,
        )
        producer = Publisher(replica.broker, 5)
        for rcpt, made in [
            ("bob@one.example", success_request("bob@one.example", message_pb2.DSN_ACTION_DELIVERED)),
            ("dave@three.example", success_request("dave@three.example", message_pb2.DSN_ACTION_RELAYED)),
            ("carol@two.example", failed),
        ]:
            await producer.publish(stages.DSN, made, message_id=rcpt)
        dsns = await inbound_dsns(vhost.url, within=20)
        if len(dsns) < 2:
            dsns += await inbound_dsns(vhost.url, within=20)

        reads = {read.kind: read for read in (read_dsn(dsn.content) for dsn in dsns)}
        assert len(dsns) == 2 and set(reads) == {"success", "failure"}
        assert [dict(block)["Action"] for block in reads["success"].recipient_blocks] == ["delivered", "relayed"]
        bounce = reads["failure"]
        assert bounce.per_message["Original-Envelope-Id"] == "ENV-42"
        assert bounce.recipient_blocks[0][0] == ("Original-Recipient", "rfc822; Carol@two.example")
        assert bounce.returned_message == failed.original_content
        assert "(invalid recipient, permanent)" in bounce.text(0)
        await eventually(lambda: replica.batcher.held == 0, within=10)
    finally:
        await replica.consumer.stop(1)
        await replica.broker.close()
