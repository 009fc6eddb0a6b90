"""Where the suppression list refuses: at RCPT for outbound senders (relay-network clients, authenticated
sessions) and never for mail from the internet to local mailboxes; the check's own answers (a tracker, cached,
failing open) are tested in services/tracker/tests/test_suppression_ingress_check.py."""

import asyncio
import ipaddress
import smtplib
from collections.abc import AsyncIterator, Sequence

import pytest

from kubemta_common.config_types import ListenAddress
from kubemta_ingress.acceptance import MailAcceptance, Refusal
from kubemta_ingress.handler import IngressHandler
from kubemta_ingress.policy import RelayPolicy
from kubemta_ingress.rejections import Reason
from kubemta_ingress.server import SmtpServer
from tests.harness.fake_publisher import FakePublisher
from tests.harness.ingress_kit import HOSTNAME, only_message

SUPPRESSED = "gone@customer.example"
REPLY = (
    f"550 5.1.1 <{SUPPRESSED}>: Recipient address is suppressed after a hard bounce on 2026-12-05 (invalid_recipient)"
)


class FakeSuppressions:
    """The suppression list holding SUPPRESSED; records what it was asked."""

    def __init__(self) -> None:
        self.asked: list[list[str]] = []

    async def refusal(self, recipients: Sequence[str]) -> dict[str, Refusal]:
        self.asked.append(list(recipients))
        return {
            recipient: Refusal(Reason.SUPPRESSED_RECIPIENT, REPLY)
            for recipient in recipients
            if recipient.lower() == SUPPRESSED
        }


async def serve(relay_networks: tuple[str, ...], suppressions: FakeSuppressions) -> tuple[SmtpServer, FakePublisher]:
    publisher = FakePublisher()
    handler = IngressHandler(
        MailAcceptance(
            hostname=HOSTNAME,
            policy=RelayPolicy.create(["example.org"], [ipaddress.ip_network(net) for net in relay_networks]),
            max_recipients=100,
            max_message_size=1_000_000,
            publisher=publisher,
            suppressions=suppressions,
        )
    )
    server = SmtpServer(
        handler, listen=ListenAddress("127.0.0.1", 0), hostname=HOSTNAME, max_message_size=1_000_000, timeout=10.0
    )
    await server.start()
    return server, publisher


@pytest.fixture
async def suppressions() -> AsyncIterator[FakeSuppressions]:
    yield FakeSuppressions()


def send(port: int, recipients: list[str]) -> dict[str, tuple[int, bytes]]:
    """smtplib's sendmail (on a thread: the server runs on the test's loop); the refused recipients."""
    with smtplib.SMTP("127.0.0.1", port, timeout=5) as client:
        return client.sendmail("app@example.org", recipients, b"Subject: hi\r\n\r\nbody\r\n")


async def test_a_relay_network_sender_is_refused_the_suppressed_recipient_and_the_others_are_queued(
    suppressions: FakeSuppressions,
) -> None:
    server, publisher = await serve(("127.0.0.0/8",), suppressions)
    try:
        refused = await asyncio.to_thread(send, server.port, ["ok@customer.example", "GONE@customer.example"])
    finally:
        await server.stop(drain_seconds=1.0)
    assert refused == {"GONE@customer.example": (550, REPLY[4:].encode())}
    assert list(only_message(publisher).recipients) == ["ok@customer.example"]
    assert suppressions.asked == [["ok@customer.example"], ["GONE@customer.example"]]


async def test_mail_from_the_internet_to_a_local_mailbox_is_never_checked(suppressions: FakeSuppressions) -> None:
    server, publisher = await serve((), suppressions)  # 127.0.0.1 is not a relay client: an outsider
    try:
        assert await asyncio.to_thread(send, server.port, ["gone@example.org"]) == {}
    finally:
        await server.stop(drain_seconds=1.0)
    assert list(only_message(publisher).recipients) == ["gone@example.org"]
    assert suppressions.asked == []


async def test_without_a_suppression_list_nothing_is_refused() -> None:
    acceptance = MailAcceptance(
        hostname=HOSTNAME,
        policy=RelayPolicy.create([], [ipaddress.ip_network("127.0.0.0/8")]),
        max_recipients=100,
        max_message_size=1_000_000,
        publisher=FakePublisher(),
    )
    assert await acceptance.suppression_refusals([SUPPRESSED]) == {}
    refusal = await acceptance.recipient_refusal(
        SUPPRESSED,
        [],
        sender="app@example.org",
        client=ipaddress.ip_address("127.0.0.1"),
        authenticated=True,
        smtputf8=False,
    )
    assert refusal is None
