"""End to end: what a sender gets for each RFC 3461 NOTIFY/RET combination (issue 16).

One pipeline run per module: the four services as processes on a vhost of their own, a real name
server, and aiosmtpd peers that do not offer DSN, so kubemta itself reports: mx.e2e.test (mx1) refuses
`nobody` (550 5.1.1), defers every `slow*` (451 4.3.0) and accepts the rest; the senders' MX
(sender.e2e.test, bounce-mx) receives the DSNs. Each case mails from a sender of its own, so its DSN is
told apart by the DSN's recipient. A client submits over SMTP with DSN parameters (smtplib); the delay
warning is due after 2 s (KUBEMTA_DELAY_WARNING_AFTER) and retries come every second. An ENVID and an
ORCPT with xtext escapes ("+2B" for "+", "+3D" for "=") must appear decoded in the report, as Postfix
writes them.

Every DSN kubemta writes is read with the strict reader (tests/harness/dsn_reader.py: the email package and
flufl.bounce); flufl.bounce must find the failed address in a failure DSN, and no address in a success
one. The cases whose point is that no DSN comes are checked once every DSN that should come has come
and the DSN batch window has passed three times over.
"""

import asyncio
import smtplib
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import cast

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import MailWorld
from tests.harness.dns_server import DnsServer
from tests.harness.dsn_reader import ReadDsn, read_dsn
from tests.harness.ports import free_port
from tests.harness.rabbitmq import BrokerNode
from tests.harness.smtp_peer import ReceivedMessage
from tests.harness.stack import Stack

pytestmark = [pytest.mark.broker, pytest.mark.e2e]

SENDER_DOMAIN = "sender.e2e.test"
BODY_LINE = "This body line travels back only with RET=FULL."
ARRIVAL_TIMEOUT = 40.0
SETTLE_SECONDS = 3.0  # three DSN batch windows (1 s in the world's environment)


@dataclass(frozen=True)
class Case:
    """One message: from `<sender_local>@sender.e2e.test` to `recipient`, with these DSN parameters."""

    sender_local: str
    recipient: str
    mail_options: tuple[str, ...]
    rcpt_options: tuple[str, ...]

    @property
    def sender(self) -> str:
        return f"{self.sender_local}@{SENDER_DOMAIN}"


CASES = {
    "never": Case("never", "nobody@mx.e2e.test", (), ("NOTIFY=NEVER",)),
    "failure_full": Case(
        "failure-full",
        "nobody@mx.e2e.test",
        ("RET=FULL", "ENVID=failure+2Bfull+3Denvid-1"),
        ("NOTIFY=FAILURE", "ORCPT=rfc822;Nobody+2BOriginal@example.org"),
    ),
    "failure_hdrs": Case(
        "failure-hdrs", "nobody@mx.e2e.test", ("RET=HDRS", "ENVID=failure-hdrs.envid-2"), ("NOTIFY=FAILURE",)
    ),
    "success": Case(
        "success",
        "bob@mx.e2e.test",
        ("ENVID=success.envid-3",),
        ("NOTIFY=SUCCESS", "ORCPT=rfc822;Bob.Original@example.org"),
    ),
    "delay_asked": Case("delay-asked", "slow1@mx.e2e.test", (), ("NOTIFY=DELAY",)),
    "delay_not_asked": Case("delay-not-asked", "slow2@mx.e2e.test", (), ("NOTIFY=FAILURE",)),
    "delay_default": Case("delay-default", "slow3@mx.e2e.test", (), ()),
}
EXPECTED_DSNS = ("failure_full", "failure_hdrs", "success", "delay_asked", "delay_default")
BOUNCING = ("never", "failure_full", "failure_hdrs")


@dataclass(frozen=True)
class SmtpReplies:
    """What kubemta's ingress answered to one DSN-carrying transaction (DATA only after an accepted RCPT)."""

    mail: tuple[int, bytes]
    rcpt: tuple[int, bytes]
    data: tuple[int, bytes] | None

    @property
    def queued(self) -> bool:
        return self.mail[0] == 250 and self.rcpt[0] == 250 and self.data is not None and self.data[0] == 250


def compose(sender: str, recipient: str, subject: str) -> bytes:
    return (
        f"From: <{sender}>\r\nTo: <{recipient}>\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject.replace(' ', '-')}@e2e.test>\r\nDate: Sat, 05 Dec 2026 12:00:00 +0000\r\n"
        f"\r\n{BODY_LINE}\r\n"
    ).encode()


def _send_sync(server: str, case: Case, subject: str) -> SmtpReplies:
    host, port = server.rsplit(":", 1)
    with smtplib.SMTP(host, int(port), timeout=30) as client:
        client.ehlo("client.e2e.test")
        mail = client.mail(case.sender, list(case.mail_options))
        if mail[0] != 250:
            return SmtpReplies(mail, (0, b"not sent"), None)
        rcpt = client.rcpt(case.recipient, list(case.rcpt_options))
        data = client.data(compose(case.sender, case.recipient, subject)) if rcpt[0] == 250 else None
        return SmtpReplies(mail, rcpt, data)


async def send_with_dsn(server: str, case: Case, subject: str) -> SmtpReplies:
    """One transaction carrying the case's MAIL and RCPT parameters, with smtplib in a thread (so the peers,
    served by this loop, keep answering)."""
    return await asyncio.to_thread(_send_sync, server, case, subject)


async def wait_until(condition: Callable[[], bool], *, within: float) -> bool:
    """Poll `condition` for at most `within` seconds; whether it held (the checks that follow say what was
    missing)."""
    try:
        async with asyncio.timeout(within):
            while True:
                if condition():
                    return True
                await asyncio.sleep(0.2)
    except TimeoutError:
        return False


def kubemta_dsns_to(messages: list[ReceivedMessage], address: str) -> list[ReceivedMessage]:
    """What the sender's MX received for `address`: only kubemta writes to it here, so it is kubemta's DSNs
    (any null-sender message, whatever its form, so that a malformed or unwanted DSN is counted too)."""
    return [message for message in messages if message.rcpt_tos == [address] and message.mail_from == ""]


@dataclass(frozen=True)
class MatrixRun:
    replies: dict[str, SmtpReplies]
    dsns: dict[str, list[ReceivedMessage]]
    """kubemta's DSNs by case, as the senders' MX received them."""
    delivered: list[ReceivedMessage]
    """What mx1 accepted."""
    bounced: float
    """kubemta_recipients_bounced_total of the queue-manager (every provider and class) at the end."""


async def bounced_recipients(stack: Stack) -> float:
    """The queue-manager's kubemta_recipients_bounced_total summed over its labels."""
    status, text = await stack.http("queue-manager", "/metrics")
    assert status == 200, status
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "kubemta_recipients_bounced_total"
    )


async def until_bounced(stack: Stack, count: int, *, within: float) -> None:
    """Wait (at most `within` seconds) until the queue-manager counted `count` bounced recipients."""
    try:
        async with asyncio.timeout(within):
            while True:
                if await bounced_recipients(stack) >= count:
                    return
                await asyncio.sleep(0.2)
    except TimeoutError:
        return  # the test that needs it says what is missing


async def _run_matrix(broker_node: BrokerNode, net: str, dns: DnsServer, workdir: Path) -> MatrixRun:
    vhost = broker_node.create_vhost()
    stack = Stack(workdir, {"KUBEMTA_AMQP_URL": vhost.url})
    world = MailWorld(net, dns, free_port(), workdir)
    rules = {"nobody": "550 5.1.1 <nobody@mx.e2e.test>: Recipient address rejected: User unknown"}
    rules.update({f"slow{n}": "451 4.3.0 Try again later" for n in (1, 2, 3)})
    mx1 = world.peer("mx1", rules=rules)
    bounce_mx = world.peer("bounce-mx")
    try:
        await mx1.start()
        await bounce_mx.start()
        server = f"127.0.0.1:{free_port()}"
        stack.env.update(world.env(smtp_listen=server, delay_warning_after="2s"))
        await stack.start()
        replies = {name: await send_with_dsn(server, case, f"dsn matrix {name}") for name, case in CASES.items()}

        def dsns() -> dict[str, list[ReceivedMessage]]:
            return {name: kubemta_dsns_to(bounce_mx.messages, case.sender) for name, case in CASES.items()}

        expected = [name for name in EXPECTED_DSNS if replies[name].queued]
        await wait_until(lambda: all(dsns()[name] for name in expected), within=ARRIVAL_TIMEOUT)
        await until_bounced(stack, len(BOUNCING), within=ARRIVAL_TIMEOUT)  # NOTIFY=NEVER's recipient too
        await asyncio.sleep(SETTLE_SECONDS)
        return MatrixRun(replies, dsns(), list(mx1.messages), await bounced_recipients(stack))
    finally:
        try:
            await stack.stop()
        finally:
            for peer in world.peers:
                await peer.stop()
            vhost.delete()


@pytest.fixture(scope="module")
def matrix(
    broker_node: BrokerNode, loopback_net: str, dns_server: DnsServer, tmp_path_factory: pytest.TempPathFactory
) -> MatrixRun:
    workdir = tmp_path_factory.mktemp("dsn-matrix")
    return asyncio.run(_run_matrix(broker_node, loopback_net, dns_server, workdir))


def only_dsn(matrix: MatrixRun, name: str) -> ReadDsn:
    """The case's one DSN, read strictly; fails when the ingress refused its parameters or no or several
    DSNs came."""
    assert matrix.replies[name].queued, f"kubemta did not queue the {name} message: {matrix.replies[name]}"
    [dsn] = matrix.dsns[name]
    return read_dsn(dsn.content)


def fields(block: list[tuple[str, str]]) -> dict[str, str]:
    return dict(block)


def orcpt(value: str) -> tuple[str, str]:
    """An Original-Recipient's (address type, address), whatever the space after its ";"."""
    address_type, _, address = value.partition(";")
    return address_type.strip().lower(), address.strip()


def returned_part(dsn: ReadDsn) -> EmailMessage:
    return dsn.part(2)


# --- NOTIFY=NEVER and NOTIFY=FAILURE ---------------------------------------------------------------


def test_notify_never_gets_no_dsn_for_a_permanent_failure(matrix: MatrixRun) -> None:
    assert matrix.replies["never"].queued, matrix.replies["never"]
    assert matrix.bounced == len(BOUNCING)  # its recipient bounced (with the two NOTIFY=FAILURE ones)
    assert matrix.dsns["never"] == []


def test_notify_failure_gets_a_failed_dsn_with_envid_and_orcpt(matrix: MatrixRun) -> None:
    dsn = only_dsn(matrix, "failure_full")
    per_message = fields(dsn.blocks[0])
    assert per_message.get("Original-Envelope-Id") == "failure+full=envid-1"  # xtext-decoded, as Postfix writes it
    [recipient] = [fields(block) for block in dsn.recipient_blocks]
    assert recipient["Action"] == "failed"
    assert recipient["Status"].startswith("5.1.1")
    assert orcpt(recipient["Final-Recipient"]) == ("rfc822", "nobody@mx.e2e.test")
    assert orcpt(recipient.get("Original-Recipient", "")) == ("rfc822", "Nobody+Original@example.org")
    _, permanent = dsn.flufl
    assert {address.lower() for address in permanent} == {b"nobody+original@example.org"}  # ORCPT first


def test_flufl_bounce_finds_the_failed_address_without_orcpt(matrix: MatrixRun) -> None:
    dsn = only_dsn(matrix, "failure_hdrs")
    temporary, permanent = dsn.flufl
    assert permanent == {b"nobody@mx.e2e.test"} and temporary == set()
    assert "Original-Recipient" not in fields(dsn.recipient_blocks[0])


# --- RET=FULL and RET=HDRS ------------------------------------------------------------------------------


def test_ret_full_returns_the_whole_message(matrix: MatrixRun) -> None:
    dsn = only_dsn(matrix, "failure_full")
    returned = returned_part(dsn)
    assert returned.get_content_type() == "message/rfc822"
    [original] = cast(list[EmailMessage], returned.get_payload())
    assert original["Subject"] == "dsn matrix failure_full"
    assert BODY_LINE in str(original.get_content())


def test_ret_hdrs_returns_the_headers_only(matrix: MatrixRun) -> None:
    dsn = only_dsn(matrix, "failure_hdrs")
    assert fields(dsn.blocks[0]).get("Original-Envelope-Id") == "failure-hdrs.envid-2"
    returned = returned_part(dsn)
    assert returned.get_content_type() == "text/rfc822-headers"
    headers = dsn.parts[2].body.decode()
    assert "Subject: dsn matrix failure_hdrs" in headers
    assert BODY_LINE not in headers


# --- NOTIFY=SUCCESS to a next hop without DSN -----------------------------------------------------------


def test_notify_success_to_a_next_hop_without_dsn_gets_a_relayed_dsn(matrix: MatrixRun) -> None:
    dsn = only_dsn(matrix, "success")
    assert fields(dsn.blocks[0]).get("Original-Envelope-Id") == "success.envid-3"
    [recipient] = [fields(block) for block in dsn.recipient_blocks]
    assert recipient["Action"] == "relayed"
    assert recipient["Status"].startswith("2.")
    assert orcpt(recipient["Final-Recipient"]) == ("rfc822", "bob@mx.e2e.test")
    assert orcpt(recipient.get("Original-Recipient", "")) == ("rfc822", "Bob.Original@example.org")
    assert dsn.flufl == (frozenset(), frozenset())  # a success is nobody's bounce
    assert returned_part(dsn).get_content_type() == "text/rfc822-headers"  # no RET: headers (RFC 3461 §4.3)
    assert "Subject: dsn matrix success" in dsn.parts[2].body.decode()
    # the message itself went on, without parameters the next hop did not offer
    [delivered] = [message for message in matrix.delivered if message.rcpt_tos == ["bob@mx.e2e.test"]]
    assert delivered.mail_from == CASES["success"].sender
    assert not any(option.upper().startswith(("RET=", "ENVID=")) for option in delivered.mail_options)


# --- NOTIFY=DELAY vs NOTIFY=FAILURE on a deferral --------------------------------------------------------


def test_notify_delay_gets_a_delay_warning(matrix: MatrixRun) -> None:
    dsn = only_dsn(matrix, "delay_asked")
    [recipient] = [fields(block) for block in dsn.recipient_blocks]
    assert recipient["Action"] == "delayed"
    assert recipient["Status"].startswith("4.")
    temporary, permanent = dsn.flufl
    assert temporary == {b"slow1@mx.e2e.test"} and permanent == set()


def test_notify_failure_alone_gets_no_delay_warning(matrix: MatrixRun) -> None:
    assert matrix.replies["delay_not_asked"].queued, matrix.replies["delay_not_asked"]
    assert matrix.dsns["delay_not_asked"] == []


def test_no_notify_gets_a_delay_warning_as_before(matrix: MatrixRun) -> None:
    dsn = only_dsn(matrix, "delay_default")
    assert [fields(block)["Action"] for block in dsn.recipient_blocks] == ["delayed"]
