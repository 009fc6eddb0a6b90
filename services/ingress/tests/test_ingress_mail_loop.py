"""KUBEMTA_MAX_HOPS: a message that already passed too many MTAs is refused as a mail loop (554 5.4.6).

The limit counts the Received: headers of the message as queued, kubemta's own included
(as Postfix' hopcount_limit does); the default is 100, the least RFC 5321 section 6.3
allows. The ingress refuses at DATA, so the client's MTA bounces it, and nothing circles
between two misconfigured MTAs (or back to kubemta through its own MX) forever.
"""

import asyncio
import smtplib

import pytest

from kubemta.v1 import message_pb2
from kubemta_common.config_types import ListenAddress
from kubemta_ingress.__main__ import build_servers
from kubemta_ingress.content import received_count
from kubemta_ingress.handler import MAX_HOPS_DEFAULT
from kubemta_ingress.settings import IngressSettings
from tests.harness.fake_publisher import FakePublisher
from tests.harness.ingress_kit import build_server

HOP = b"Received: from a.example by b.example with ESMTP id X;\r\n\tSun, 29 Nov 2026 12:00:00 +0000\r\n"
REST = b"From: a@example.com\r\nTo: b@example.org\r\nSubject: loop\r\n\r\nbody\r\nReceived: in the body is no hop\r\n"


def send(port: int, content: bytes) -> tuple[int, bytes]:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.ehlo("client.example")
        client.mail("a@example.com")
        client.rcpt("b@example.org")
        code, reply = client.data(content)
        return code, reply


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (HOP * 3 + REST, 3),
        (b"received: lower case\r\n" + b"RECEIVED: upper\r\n" + REST, 2),
        (REST, 0),
        (b"X-Received: not a hop\r\n" + REST, 0),
        (HOP * 2, 2),  # no body at all
    ],
)
def test_received_fields_of_the_header_section_are_counted(content: bytes, expected: int) -> None:
    assert received_count(content) == expected


@pytest.mark.parametrize(("hops", "accepted"), [(3, True), (4, False), (9, False)])
async def test_too_many_hops_is_refused_and_never_queued(metrics, hops: int, accepted: bool) -> None:
    publisher = FakePublisher()
    server = build_server(publisher, max_hops=4)
    await server.start()
    before = metrics.rejected("mail_loop")
    try:
        code, reply = await asyncio.to_thread(send, server.port, HOP * hops + REST)
    finally:
        await server.stop(1.0)
    if accepted:
        assert code == 250
        [queued] = publisher.published
        content = message_pb2.AcceptedMessage.FromString(queued.body).content
        assert received_count(content) == hops + 1, "kubemta's own Received header makes it the limit exactly"
        assert metrics.rejected("mail_loop") == before
    else:
        assert (code, reply.split(b" ", 1)[0]) == (554, b"5.4.6")
        assert f"({hops} Received headers, limit 4)".encode() in reply
        assert publisher.published == []
        assert metrics.rejected("mail_loop") == before + 1


@pytest.mark.parametrize(("hops", "accepted"), [(99, True), (100, False)])
async def test_default_settings_allow_99_received_headers_and_refuse_100(
    monkeypatch: pytest.MonkeyPatch, hops: int, accepted: bool
) -> None:
    """RFC 5321 section 6.3: a loop limit SHOULD be at least 100 Received: headers."""
    monkeypatch.delenv("KUBEMTA_MAX_HOPS", raising=False)
    settings = IngressSettings(local_domains=["example.org"]).model_copy(
        update={"smtp_listen": ListenAddress("127.0.0.1", 0)}  # the service's own server, on a free port
    )
    publisher = FakePublisher()
    [server] = build_servers(settings, publisher, None)
    await server.start()
    try:
        code, reply = await asyncio.to_thread(send, server.port, HOP * hops + REST)
    finally:
        await server.stop(1.0)
    if accepted:
        assert code == 250, reply
        [queued] = publisher.published
        assert received_count(message_pb2.AcceptedMessage.FromString(queued.body).content) == 100
    else:
        assert (code, reply.split(b" ", 1)[0]) == (554, b"5.4.6")
        assert b"(100 Received headers, limit 100)" in reply
        assert publisher.published == []


def test_the_default_is_100_everywhere() -> None:
    assert IngressSettings.model_fields["max_hops"].default == MAX_HOPS_DEFAULT == 100
