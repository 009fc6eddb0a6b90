"""End to end: what arrives at the destination MX after SMTP smuggling attempts and edge content.

Messages go in over a raw socket (byte-exact) to the ingress process, through RabbitMQ
and the other three services, out to a real SMTP peer. Every accepted message arrives
exactly once, byte-identical after the one Received header, with CRLF line endings
only and no NUL; nothing refused arrives at all.
"""

import asyncio

import pytest

from tests.e2e.conftest import MailWorld
from tests.harness.raw_smtp import RawSmtp
from tests.harness.smtp_peer import ReceivedMessage
from tests.harness.stack import Stack

pytestmark = [pytest.mark.broker, pytest.mark.e2e]

SENDER = "<alice@sender.e2e.test>"
SMUGGLED = (
    b"MAIL FROM:<ceo@mx.e2e.test>\r\nRCPT TO:<victim@mx.e2e.test>\r\nDATA\r\n"
    b"From: ceo@mx.e2e.test\r\nSubject: smuggled\r\n\r\nforged\r\n"
)


def headers(name: str) -> bytes:
    """Complete headers (with Date: and Message-ID:, which kubemta would add to a trusted client's mail)."""
    return (
        f"From: alice@sender.e2e.test\r\nTo: {name}@mx.e2e.test\r\nSubject: {name}\r\n"
        f"Date: Sat, 05 Dec 2026 12:00:00 +0000\r\nMessage-ID: <{name}@sender.e2e.test>\r\n\r\n"
    ).encode()


# name -> (what goes on the wire after DATA, the message content the peer must receive)
ACCEPTED: dict[str, tuple[bytes, bytes]] = {
    "dots": (
        b"..\r\n...\r\n. \r\n.x\r\n..x\r\nend\r\n",
        b".\r\n..\r\n \r\nx\r\n.x\r\nend\r\n",
    ),
    "dotline-last": (b"before\r\n..\r\n", b"before\r\n.\r\n"),
    "long": (b"a" * 998 + b"\r\n" + b"b" * 997 + b"\r\n", b"a" * 998 + b"\r\n" + b"b" * 997 + b"\r\n"),
    "long-dot": (b".." + b"c" * 997 + b"\r\n", b"." + b"c" * 997 + b"\r\n"),
    "eightbit": (
        "Grüße, ça va? ☃\r\n".encode() + bytes(range(0x80, 0x100)) + b"\r\n",
        "Grüße, ça va? ☃\r\n".encode() + bytes(range(0x80, 0x100)) + b"\r\n",
    ),
    "lookalike-space": (b"first\r\n. \r\n" + SMUGGLED, b"first\r\n \r\n" + SMUGGLED),
    "lookalike-tab": (b"first\r\n.\t\r\n" + SMUGGLED, b"first\r\n\t\r\n" + SMUGGLED),
    "lookalike-dotdot": (b"first\r\n..\r\n" + SMUGGLED, b"first\r\n.\r\n" + SMUGGLED),
    "empty-lines": (b"\r\n\r\n\r\n", b"\r\n\r\n\r\n"),
}

# Refused whole by the ingress; must never arrive anywhere.
REFUSED: dict[str, bytes] = {
    "lf-dot-lf": b"first\n.\n" + SMUGGLED,
    "lf-dot-crlf": b"first\n.\r\n" + SMUGGLED,
    "cr-dot-cr": b"first\r.\r" + SMUGGLED,
    "crlf-dot-cr": b"first\r\n.\r" + SMUGGLED,
    "cr-dot-crlf": b"first\r.\r\n" + SMUGGLED,
    "crlf-dot-lf": b"first\r\n.\n" + SMUGGLED,
    "lf-dot-cr": b"first\n.\r" + SMUGGLED,
    "crlf-nul-dot": b"first\r\n\x00.\r\n" + SMUGGLED,
    "nul": b"a\x00b\r\n",
    "too-long": b"d" * 999 + b"\r\n",
}


def after_received(message: ReceivedMessage) -> bytes:
    """The content after the single Received header kubemta prepends (continuation lines start with TAB)."""
    content = message.content
    assert content.startswith(b"Received: ")
    end = 0
    while True:
        end = content.index(b"\r\n", end) + 2
        if content[end : end + 1] != b"\t":
            break
    assert not content[end:].startswith(b"Received: "), "more than one Received header added"
    return content[end:]


def assert_clean(content: bytes) -> None:
    """CRLF line endings only, no NUL, no line over 1000 octets (RFC 5321 sections 2.3.8, 4.5.3.1.6)."""
    pairs = content.count(b"\r\n")
    assert content.count(b"\r") == pairs and content.count(b"\n") == pairs, "bare CR or LF"
    assert b"\x00" not in content
    assert all(len(line) <= 998 for line in content.split(b"\r\n"))


async def test_what_arrives_is_byte_identical_crlf_only_and_one_per_accepted_message(
    mta: tuple[Stack, str], world: MailWorld
) -> None:
    stack, server = mta
    host, port = server.rsplit(":", 1)
    mx1 = world.peer("mx1")
    await mx1.start()
    async with await RawSmtp.connect(host, int(port)) as client:
        await client.ehlo()
        for name, wire in REFUSED.items():
            reply = await client.transaction(SENDER, [f"<{name}@mx.e2e.test>"], headers(name) + wire)
            assert reply.startswith(("550 5.6.0 ", "500 5.5.2 ")), (name, reply)
            assert await client.silent_for(0.1), name  # the smuggled commands got no replies
        for name, (wire, _) in ACCEPTED.items():
            parameters = " BODY=8BITMIME" if name == "eightbit" else ""
            reply = await client.transaction(SENDER, [f"<{name}@mx.e2e.test>"], headers(name) + wire, parameters)
            assert reply.startswith("250 2.0.0 Ok: queued as "), (name, reply)
            assert await client.silent_for(0.1), name
    delivered = await mx1.wait_for_messages(len(ACCEPTED), timeout=40)
    await asyncio.sleep(2.0)  # anything extra (a smuggled second message) would arrive by now
    assert len(mx1.messages) == len(ACCEPTED)
    assert mx1.refused_messages == []
    by_recipient = {tuple(message.rcpt_tos): message for message in delivered}
    assert sorted(by_recipient) == sorted((f"{name}@mx.e2e.test",) for name in ACCEPTED)
    for name, (_, expected) in ACCEPTED.items():
        message = by_recipient[(f"{name}@mx.e2e.test",)]
        assert message.mail_from == "alice@sender.e2e.test"
        assert_clean(message.content)
        assert after_received(message) == headers(name) + expected, name
    assert await stack.metric("ingress", "kubemta_messages_received_total") == len(ACCEPTED)
    assert await stack.metric("ingress", "kubemta_messages_rejected_total", reason="bad_line_ending") == 7
    assert await stack.metric("ingress", "kubemta_messages_rejected_total", reason="nul_character") == 2
    assert await stack.metric("ingress", "kubemta_messages_rejected_total", reason="line_too_long") == 1
