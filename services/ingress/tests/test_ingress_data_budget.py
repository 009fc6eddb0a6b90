"""The process-wide budget for message data in flight: a session over it gets 452 4.3.1, never an OOM kill.

Through the real SMTP server with a publisher that holds its confirm until the test lets it go, so one
session's message stays in memory (reserved) while the others try theirs.
"""

import asyncio

from google.protobuf.message import Message

from kubemta_common.amqp.stages import Stage
from kubemta_common.bus_messages import Encoded
from kubemta_ingress.data_budget import DataBudget, declared_size
from kubemta_ingress.server import SessionOptions
from tests.harness.fake_publisher import FakePublisher
from tests.harness.ingress_kit import RawClient, eventually

INSUFFICIENT = "452 4.3.1 Insufficient system storage"
BODY_LINE = b"b" * 998 + b"\r\n"


def message(lines: int, subject: str) -> bytes:
    head = f"From: a@example.net\r\nTo: user@example.org\r\nSubject: {subject}\r\n\r\n".encode()
    return head + BODY_LINE * lines


class HeldPublisher(FakePublisher):
    """Confirms only once `release` is set (the broker is slow: the message stays in the ingress meanwhile)."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.waiting = 0

    async def publish[M: Message](self, stage: Stage[M], message: M | Encoded[M], *, message_id: str) -> None:
        self.waiting += 1
        try:
            async with asyncio.timeout(10):
                await self.release.wait()
        finally:
            self.waiting -= 1
        await super().publish(stage, message, message_id=message_id)


async def open_transaction(port: int, mail: str = "MAIL FROM:<a@example.net>") -> tuple[RawClient, str]:
    client = await RawClient.open(port)
    await client.read_reply()
    assert (await client.command("EHLO client.example"))[-1].startswith("250 ")
    reply = await client.last(mail)
    return client, reply


async def send_data(client: RawClient, content: bytes) -> str:
    assert (await client.last("RCPT TO:<user@example.org>")).startswith("250 ")
    assert (await client.last("DATA")).startswith("354 ")
    await client.send(content + b".\r\n")
    return (await client.read_reply())[-1]


async def test_a_session_over_the_budget_gets_452_and_the_others_go_on(servers, metrics) -> None:
    budget = DataBudget(100_000)
    publisher = HeldPublisher()
    server, _ = await servers.start(publisher, options=SessionOptions(data_budget=budget))
    refused = metrics.rejected("insufficient_storage")

    first, reply = await open_transaction(server.port)
    assert reply.startswith("250 ")
    first_reply = asyncio.create_task(send_data(first, message(60, "first")))
    await eventually(lambda: publisher.waiting > 0)
    assert budget.in_use >= 60 * len(BODY_LINE)  # held while its confirm is awaited

    second, reply = await open_transaction(server.port)
    assert reply.startswith("250 ")
    assert await send_data(second, message(60, "second")) == INSUFFICIENT  # after its final dot, data dropped
    assert budget.in_use < 100_000 and publisher.published == []
    third, reply = await open_transaction(server.port, "MAIL FROM:<a@example.net> SIZE=50000")
    assert reply == INSUFFICIENT  # declared more than is free now
    assert metrics.rejected("insufficient_storage") == refused + 2

    publisher.release.set()
    assert (await first_reply).startswith("250 2.0.0 Ok: queued as ")
    assert budget.in_use == 0
    assert (await second.last("MAIL FROM:<a@example.net>")).startswith("250 ")  # the same session, later: fine
    assert (await send_data(second, message(60, "second again"))).startswith("250 2.0.0 Ok: queued as ")
    assert budget.in_use == 0
    for client in (first, second, third):
        await client.close()


async def test_while_nothing_fits_mail_is_refused_at_once(servers) -> None:
    budget = DataBudget(10_000)
    server, publisher = await servers.start(FakePublisher(), options=SessionOptions(data_budget=budget))
    others = budget.reservation()
    assert others.grow(10_000)
    client, reply = await open_transaction(server.port)
    assert reply == INSUFFICIENT
    others.release()
    assert (await client.last("MAIL FROM:<a@example.net>")).startswith("250 ")
    assert (await send_data(client, message(5, "fits"))).startswith("250 2.0.0 Ok: queued as ")
    assert len(publisher.published) == 1
    await client.close()


async def test_a_client_that_disconnects_inside_data_gives_its_bytes_back(servers) -> None:
    budget = DataBudget(1_000_000)
    server, _ = await servers.start(FakePublisher(), options=SessionOptions(data_budget=budget))
    client, _ = await open_transaction(server.port)
    assert (await client.last("RCPT TO:<user@example.org>")).startswith("250 ")
    assert (await client.last("DATA")).startswith("354 ")
    await client.send(BODY_LINE * 100)
    await eventually(lambda: budget.in_use >= 50 * len(BODY_LINE))
    await client.close()
    await eventually(lambda: budget.in_use == 0)


def test_declared_size_reads_only_a_plain_size_parameter() -> None:
    assert declared_size(["SIZE=1234", "BODY=8BITMIME"]) == 1234
    assert declared_size(["size=7"]) == 7
    for hostile in (["SIZE=-1"], ["SIZE=1e9"], ["SIZE=" + "9" * 40], ["SIZE=٣"], ["SIZE"], []):
        assert declared_size(hostile) == 0
