"""End to end: nothing the ingress refuses ever reaches the bus or a destination.

The ingress runs alone first (queue-manager stopped), against a real RabbitMQ vhost:
every kind of refused input, then one good message. The `inbound` queue must then hold
exactly one message. With the other three services started, the destination peer
receives exactly that one, and the ingress counted each refusal under its reason.
"""

import asyncio

import pytest

from tests.e2e.conftest import MailWorld
from tests.harness.ports import free_port
from tests.harness.rabbitmq import Vhost
from tests.harness.raw_smtp import RawSmtp
from tests.harness.stack import Stack

pytestmark = [pytest.mark.broker, pytest.mark.e2e]

SENDER = "<alice@sender.e2e.test>"
RCPT = "<bob@mx.e2e.test>"
MAX_SIZE = 20000
MAX_RECIPIENTS = 3
SMUGGLED = b"MAIL FROM:<ceo@mx.e2e.test>\r\nRCPT TO:<victim@mx.e2e.test>\r\nDATA\r\nSubject: forged\r\n\r\nx\r\n"


def message(subject: str, body: bytes = b"Hello.\r\n") -> bytes:
    return f"From: alice@sender.e2e.test\r\nTo: bob@mx.e2e.test\r\nSubject: {subject}\r\n\r\n".encode() + body


async def inbound_depth(vhost: Vhost) -> int:
    depths = await asyncio.to_thread(vhost.queue_depths)
    return depths.get("inbound", 0)


async def wait_for_depth(vhost: Vhost, expected: int, within: float = 20.0) -> None:
    """Queue statistics lag a few seconds: poll (bounded) until the depth is `expected`."""
    depth = -1
    try:
        async with asyncio.timeout(within):
            while True:
                depth = await inbound_depth(vhost)
                if depth == expected:
                    return
                await asyncio.sleep(0.5)
    except TimeoutError:
        pytest.fail(f"inbound holds {depth} messages, expected {expected}")


async def test_refused_input_never_reaches_the_queue_or_the_destination(
    stack: Stack, world: MailWorld, vhost: Vhost
) -> None:
    smtp_port = free_port()
    stack.env.update(
        world.env(
            smtp_listen=f"127.0.0.1:{smtp_port}",
            relay_networks="127.0.0.1/32",  # a client from 127.0.0.2 may not relay
            max_message_size=str(MAX_SIZE),
            max_recipients=str(MAX_RECIPIENTS),
        )
    )
    await stack.start(("ingress",))
    mx1 = world.peer("mx1")
    await mx1.start()

    async with await RawSmtp.connect("127.0.0.1", smtp_port, source="127.0.0.2") as outsider:
        await outsider.ehlo()
        assert (await outsider.command(f"MAIL FROM:{SENDER}")).startswith("250 ")
        assert (await outsider.command(f"RCPT TO:{RCPT}")).startswith("554 5.7.1 ")  # relay denied
        assert (await outsider.command("DATA")).startswith("503 5.5.1 ")

    async with await RawSmtp.connect("127.0.0.1", smtp_port) as client:
        await client.ehlo()
        refusals = {
            # too big, declared at MAIL and sent during DATA
            "size-declared": await client.transaction(SENDER, [RCPT], message("big"), f" SIZE={MAX_SIZE + 1}"),
            "size-sent": await client.transaction(SENDER, [RCPT], message("big", (b"x" * 98 + b"\r\n") * 250)),
            "bare-lf": await client.transaction(SENDER, [RCPT], message("lf", b"one\ntwo\r\n")),
            "bare-cr": await client.transaction(SENDER, [RCPT], message("cr", b"one\rtwo\r\n")),
            "nul": await client.transaction(SENDER, [RCPT], message("nul", b"one\x00two\r\n")),
            "smuggling": await client.transaction(SENDER, [RCPT], message("smuggle", b"first\n.\n" + SMUGGLED)),
            "smuggling-nul": await client.transaction(SENDER, [RCPT], message("smug", b"a\r\n\x00.\r\n" + SMUGGLED)),
            "line-too-long": await client.transaction(SENDER, [RCPT], message("long", b"y" * 2000 + b"\r\n")),
            "sender-syntax": await client.transaction("<alice@>", [RCPT], message("syntax")),
            "recipient-syntax": await client.transaction(SENDER, ["<bob@mx..e2e.test>"], message("syntax")),
            "too-many-recipients": await client.transaction(
                SENDER, [f"<r{number}@mx.e2e.test>" for number in range(MAX_RECIPIENTS + 1)], message("many")
            ),
        }
        expected_codes = {
            "size-declared": "552 5.3.4 ",
            "size-sent": "552 5.3.4 ",
            "bare-lf": "550 5.6.0 ",
            "bare-cr": "550 5.6.0 ",
            "nul": "550 5.6.0 ",
            "smuggling": "550 5.6.0 ",
            "smuggling-nul": "550 5.6.0 ",
            "line-too-long": "500 5.5.2 ",
            "sender-syntax": "501 5.1.",
            "recipient-syntax": "501 5.1.3 ",
            "too-many-recipients": "452 4.5.3 ",
        }
        for name, prefix in expected_codes.items():
            assert refusals[name].startswith(prefix), (name, refusals[name])
        assert await client.silent_for(0.3)  # no reply to any smuggled command
        good = await client.transaction(SENDER, [RCPT], message("the good one"))
        assert good.startswith("250 2.0.0 Ok: queued as "), good
        queue_id = good.rsplit(" ", 1)[1]

    await wait_for_depth(vhost, 1)
    await asyncio.sleep(3.0)  # a late extra publish would show by now
    assert await inbound_depth(vhost) == 1

    await stack.start(("queue-manager", "dns-resolver", "delivery-worker"))
    [delivered] = await mx1.wait_for_messages(1, timeout=30)
    await asyncio.sleep(2.0)
    assert len(mx1.messages) == 1 and mx1.refused_messages == []
    assert delivered.rcpt_tos == ["bob@mx.e2e.test"]
    assert f"id {queue_id}".encode() in delivered.content
    assert b"Subject: the good one\r\n" in delivered.content
    await wait_for_depth(vhost, 0)

    assert await stack.metric("ingress", "kubemta_messages_received_total") == 1
    rejected = {
        "relay_denied": 1,
        "message_too_big": 2,
        "bad_line_ending": 3,
        "nul_character": 2,
        "line_too_long": 1,
        "bad_address": 2,
        "too_many_recipients": 1,
    }
    for reason, count in rejected.items():
        value = await stack.metric("ingress", "kubemta_messages_rejected_total", reason=reason)
        assert value == count, (reason, value)
    log = stack.log("ingress")
    assert "127.0.0.2" in log  # the relay refusal is logged with the client address
