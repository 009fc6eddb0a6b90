"""8-bit content to servers without 8BITMIME (RFC 6152 §3), against real SMTP and LMTP servers on loopback (aiosmtpd):
MIME content arrives converted to 7 bit without BODY=8BITMIME, what cannot be converted bounces with 5.6.3 before
MAIL FROM, and a server that offers 8BITMIME gets the message exactly as it was."""

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP, Envelope, Session

from kubemta.v1 import message_pb2
from kubemta_delivery_worker.deliverer import Deliverer
from tests.harness.mime_parts import decoded_parts

DELIVERED = message_pb2.OUTCOME_DELIVERED
PERMANENT = message_pb2.OUTCOME_PERMANENT

ALTERNATIVE = (
    b"From: Juergen <juergen@sender.test>\r\n"
    b"To: <bob@dest.test>\r\n"
    b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/alternative; boundary="=_alt_42"\r\n'
    b"Content-Transfer-Encoding: 8bit\r\n"
    b"\r\n"
    b"--=_alt_42\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n"
    b"\r\n"
    b"Gr\xc3\xbc\xc3\x9fe aus K\xc3\xb6ln.\r\n"
    b".a line that starts with a dot\r\n"
    b"--=_alt_42\r\n"
    b"Content-Type: text/html; charset=utf-8\r\n"
    b"\r\n"
    b"<p>Gr\xc3\xbc\xc3\x9fe aus K\xc3\xb6ln.</p>\r\n"
    b"--=_alt_42--\r\n"
)
NON_MIME = b"From: <a@sender.test>\r\nTo: <bob@dest.test>\r\nSubject: raw\r\n\r\nGr\xc3\xbc\xc3\x9fe\r\n"
EIGHT_BIT_HEADER = b"From: <a@sender.test>\r\nSubject: Gr\xc3\xbc\xc3\x9fe\r\nMIME-Version: 1.0\r\n\r\nplain body\r\n"


@pytest.mark.parametrize("pipelining", [False, True], ids=["plain", "pipelined"])
async def test_mime_content_arrives_converted_to_7bit_without_body_8bitmime(
    start_peer, host_of, job, options, pipelining: bool
) -> None:
    peer = await start_peer(eight_bit_mime=False, pipelining=pipelining)

    [result] = await Deliverer(options).deliver(job([host_of("mx1.dest.test", peer)], content=ALTERNATIVE))

    assert result.outcome == DELIVERED
    [message] = peer.messages
    assert not any(option.upper().startswith("BODY=") for option in message.mail_options)
    assert message.content.isascii()
    assert f"SIZE={len(message.content)}" in message.mail_options  # the size of what was sent: the converted content
    assert b"Content-Transfer-Encoding: quoted-printable\r\n\r\nGr=C3=BC=C3=9Fe aus K=C3=B6ln.\r\n" in message.content
    assert b"\r\n.a line that starts with a dot\r\n" in message.content  # dot-stuffing undone by the server
    header = message.content.split(b"\r\n\r\n", 1)[0]
    assert header == ALTERNATIVE.split(b"\r\n\r\n", 1)[0].replace(b"Encoding: 8bit", b"Encoding: 7bit")
    assert decoded_parts(message.content) == decoded_parts(ALTERNATIVE)


async def test_a_server_offering_8bitmime_gets_the_message_as_it_is(start_peer, host_of, job, options) -> None:
    peer = await start_peer()

    [result] = await Deliverer(options).deliver(job([host_of("mx1.dest.test", peer)], content=ALTERNATIVE))

    assert result.outcome == DELIVERED
    [message] = peer.messages
    assert message.content == ALTERNATIVE
    assert "BODY=8BITMIME" in message.mail_options


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        pytest.param(NON_MIME, "without MIME header fields", id="non-mime-body"),
        pytest.param(EIGHT_BIT_HEADER, "8-bit octets in a header field", id="8bit-header"),
    ],
)
async def test_what_cannot_be_converted_bounces_5_6_3_without_mail_from(
    start_peer, host_of, job, options, content: bytes, reason: str
) -> None:
    peer = await start_peer(eight_bit_mime=False, smtputf8=False)
    backup = await start_peer()
    hosts = [host_of("mx1.dest.test", peer), host_of("mx2.dest.test", backup)]

    results = await Deliverer(options).deliver(job(hosts, ["a@dest.test", "b@dest.test"], content=content))

    assert [r.recipient for r in results] == ["a@dest.test", "b@dest.test"]
    for result in results:
        assert (result.outcome, result.status, result.smtp_code) == (PERMANENT, "5.6.3", 0)
        assert result.diagnostic.startswith(f"host mx1.dest.test[{peer.address}]:{peer.port} does not support 8BITMIME")
        assert reason in result.diagnostic
        assert result.remote_mta == "mx1.dest.test"
    assert peer.messages == peer.refused_messages == []
    assert backup.connections == 0


async def test_8bit_headers_may_go_where_smtputf8_carries_them(start_peer, host_of, job, options) -> None:
    """A server offering SMTPUTF8 (and, against RFC 6531 section 3.1, not 8BITMIME): the body is converted, the
    UTF-8 header stays as it is."""
    peer = await start_peer(eight_bit_mime=False, smtputf8=True)
    content = EIGHT_BIT_HEADER.replace(b"plain body", b"Stra\xc3\x9fe")

    [result] = await Deliverer(options).deliver(job([host_of("mx1.dest.test", peer)], content=content, smtputf8=True))

    assert result.outcome == DELIVERED
    [message] = peer.messages
    assert message.content.split(b"\r\n\r\n", 1) == [
        EIGHT_BIT_HEADER.split(b"\r\n\r\n", 1)[0] + b"\r\nContent-Transfer-Encoding: quoted-printable",
        b"Stra=C3=9Fe\r\n",
    ]
    assert "SMTPUTF8" in message.mail_options


# --- LMTP --------------------------------------------------------------------------------------


class _LmtpHandler:
    """aiosmtpd hooks: drop 8BITMIME from the LHLO answer when told to, keep what arrives."""

    def __init__(self, eight_bit_mime: bool) -> None:
        self.eight_bit_mime = eight_bit_mime
        self.received: list[tuple[list[str], bytes]] = []
        self.mail_commands = 0

    async def handle_EHLO(  # noqa: N802 - aiosmtpd hook name
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname  # the 5-argument hook must set it (aiosmtpd's "send HELO first" otherwise)
        if not self.eight_bit_mime:
            return [line for line in responses if line[4:].upper() != "8BITMIME"]
        return responses

    async def handle_MAIL(  # noqa: N802
        self, server: SMTP, session: Session, envelope: Envelope, address: str, mail_options: list[str]
    ) -> str:
        self.mail_commands += 1
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 Ok"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        self.received.append((list(envelope.mail_options), bytes(envelope.original_content or b"")))
        return "250 2.0.0 Ok: delivered"


@pytest.fixture
async def lmtp_server(loopback) -> AsyncIterator[Callable[..., Awaitable[tuple[_LmtpHandler, Any]]]]:
    servers: list[asyncio.Server] = []

    async def start(eight_bit_mime: bool) -> tuple[_LmtpHandler, message_pb2.RouteHost]:
        handler = _LmtpHandler(eight_bit_mime)
        address = loopback()
        server = await asyncio.get_running_loop().create_server(
            lambda: LMTP(handler, hostname="lmtp.peer.test"), address, 0
        )
        servers.append(server)
        port = server.sockets[0].getsockname()[1]
        return handler, message_pb2.RouteHost(hostname="mailbox.local.test", address=address, port=port)

    yield start
    for server in servers:
        server.close()
        async with asyncio.timeout(5):
            await server.wait_closed()


def lmtp_job(job, host: message_pb2.RouteHost, content: bytes) -> message_pb2.DeliveryJob:
    the_job: message_pb2.DeliveryJob = job([host], ["bob@local.test"], content=content)
    the_job.route.kind = message_pb2.TRANSPORT_KIND_LMTP
    the_job.route.source = "transport"
    return the_job


async def test_lmtp_converts_for_a_server_without_8bitmime(lmtp_server, job, options) -> None:
    handler, host = await lmtp_server(eight_bit_mime=False)

    [result] = await Deliverer(options).deliver(lmtp_job(job, host, ALTERNATIVE))

    assert result.outcome == DELIVERED
    [(mail_options, content)] = handler.received
    assert not any(option.upper().startswith("BODY=") for option in mail_options)
    assert content.isascii()
    assert decoded_parts(content) == decoded_parts(ALTERNATIVE)


async def test_lmtp_bounces_what_cannot_be_converted_5_6_3(lmtp_server, job, options) -> None:
    handler, host = await lmtp_server(eight_bit_mime=False)

    [result] = await Deliverer(options).deliver(lmtp_job(job, host, NON_MIME))

    assert (result.outcome, result.status) == (PERMANENT, "5.6.3")
    assert "does not support 8BITMIME" in result.diagnostic
    assert handler.mail_commands == 0 and handler.received == []


async def test_lmtp_with_8bitmime_gets_the_message_as_it_is(lmtp_server, job, options) -> None:
    handler, host = await lmtp_server(eight_bit_mime=True)

    [result] = await Deliverer(options).deliver(lmtp_job(job, host, NON_MIME))

    assert result.outcome == DELIVERED
    [(mail_options, content)] = handler.received
    assert "BODY=8BITMIME" in mail_options
    assert content == NON_MIME


async def test_a_third_partys_signed_8bit_mail_is_converted_all_the_same(start_peer, host_of, job, options) -> None:
    """Relayed mail signed elsewhere: delivery first, as Postfix; its body hash then no longer matches."""
    peer = await start_peer(eight_bit_mime=False)
    signed = b"DKIM-Signature: v=1; a=rsa-sha256; d=elsewhere.test; s=s1; bh=AAAA; b=BBBB\r\n" + ALTERNATIVE

    [result] = await Deliverer(options).deliver(job([host_of("mx1.dest.test", peer)], content=signed))

    assert result.outcome == DELIVERED
    [message] = peer.messages
    assert message.content.startswith(b"DKIM-Signature: v=1; a=rsa-sha256; d=elsewhere.test;")
    assert message.content.isascii()
    assert decoded_parts(message.content) == decoded_parts(ALTERNATIVE)
