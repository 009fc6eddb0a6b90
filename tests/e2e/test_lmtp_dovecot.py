"""End to end into a real mailbox server: mail in over SMTP, through the four services, out
over LMTP (TCP and unix socket) to Dovecot, and read back over IMAP with Python's imaplib.

Dovecot answers `550 5.1.1` at RCPT for an unknown mailbox, which must bounce that
recipient alone (a DSN to the sender's MX), while the others of the same message land
in their mailboxes once.
"""

import asyncio
import imaplib
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import MailWorld, make_message, send
from tests.e2e.test_pipeline import dsn_fields, eventually, metric_reaches
from tests.harness.dovecot import Dovecot
from tests.harness.ports import free_port
from tests.harness.stack import Stack

pytestmark = [pytest.mark.broker, pytest.mark.e2e]

LOCAL_DOMAIN = "mailbox.e2e.test"
SENDER = "sender@sender.e2e.test"
USERS = {"alice": "alice-password", "bob": "bob-password"}
DOVECOT_OCTET = 61  # outside tests/e2e/conftest.py HOSTS
# A body that exercises the wire format: a leading dot (stuffed, RFC 5321 §4.5.2), 8-bit text,
# trailing spaces and an empty line.
BODY = "First line.\r\n.leading dot\r\n..two dots\r\nnaïve café \r\n\r\nLast line.\r\n"


@pytest.fixture
def dovecot(loopback_net: str) -> Iterator[Dovecot]:
    # Not under tmp_path: Dovecot's mail user (nobody, when root) must traverse the path.
    workdir = Path(tempfile.mkdtemp(prefix="kubemta-dovecot-"))
    address = f"{loopback_net}.{DOVECOT_OCTET}"
    server = Dovecot(workdir, address, free_port(address), free_port(address), USERS)
    try:
        with server:
            yield server
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


async def start_mta(stack: Stack, world: MailWorld, transport: str) -> str:
    """The four services with `LOCAL_DOMAIN` routed to `transport`; returns the SMTP address."""
    smtp_port = free_port()
    stack.env.update(
        world.env(
            smtp_listen=f"127.0.0.1:{smtp_port}",
            local_domains=LOCAL_DOMAIN,
            transports=f"{LOCAL_DOMAIN}={transport}",
            # the delivery path's own handling of Dovecot's 550 (a mailbox gone between RCPT and delivery);
            # with verification on, the ingress refuses unknown users at RCPT (test_backscatter.py)
            recipient_verify="false",
        )
    )
    await stack.start()
    return f"127.0.0.1:{smtp_port}"


@pytest.fixture
async def mta_tcp(stack: Stack, world: MailWorld, dovecot: Dovecot) -> AsyncIterator[tuple[Stack, str]]:
    yield stack, await start_mta(stack, world, f"lmtp:[{dovecot.address}]:{dovecot.lmtp_port}")


@pytest.fixture
async def mta_unix(stack: Stack, world: MailWorld, dovecot: Dovecot) -> AsyncIterator[tuple[Stack, str]]:
    yield stack, await start_mta(stack, world, f"lmtp:unix:{dovecot.lmtp_socket}")


def _fetch_all(dovecot: Dovecot, user: str) -> list[bytes]:
    """Every message in `user`'s INBOX, as stored (IMAP LOGIN, BODY.PEEK[])."""
    with imaplib.IMAP4(dovecot.address, dovecot.imap_port, timeout=10) as client:  # LOGOUT on exit
        client.login(user, USERS[user])
        status, data = client.select("INBOX", readonly=True)
        assert status == "OK", data
        status, data = client.search(None, "ALL")
        assert status == "OK", data
        messages: list[bytes] = []
        numbers = data[0]
        assert isinstance(numbers, bytes), data
        for number in numbers.decode().split():
            status, parts = client.fetch(number, "(BODY.PEEK[])")
            assert status == "OK", parts
            messages += [part[1] for part in parts if isinstance(part, tuple)]
        return messages


async def mailbox(dovecot: Dovecot, user: str, count: int, within: float = 30.0) -> list[bytes]:
    """Wait (bounded) until `user` has `count` messages; return them."""
    found: list[bytes] = []

    async def check() -> bool:
        nonlocal found
        found = await asyncio.to_thread(_fetch_all, dovecot, user)
        return len(found) >= count

    await eventually(check, within=within, what=f"{count} message(s) in {user}'s mailbox")
    return found


def body_of(stored: bytes) -> bytes:
    return stored.split(b"\r\n\r\n", 1)[1]


async def test_message_is_read_back_over_imap_byte_identical(mta_tcp: tuple[Stack, str], dovecot: Dovecot) -> None:
    stack, server = mta_tcp
    original = make_message(SENDER, [f"alice@{LOCAL_DOMAIN}"], "to the mailbox", BODY)

    outcome = await send(server, SENDER, [f"alice@{LOCAL_DOMAIN}"], original)
    assert outcome.data is not None and outcome.data[0] == 250

    [stored] = await mailbox(dovecot, "alice", 1)
    assert body_of(stored) == BODY.encode()
    # Everything the client sent arrives unchanged below the trace headers added on the way
    # (ingress Received:, then Dovecot's Return-Path: and Received: ... with LMTP).
    assert stored.endswith(original)
    assert stored.startswith(f"Return-Path: <{SENDER}>\r\n".encode())
    assert b"by " in stored and b"with LMTP" in stored
    await metric_reaches(stack, "delivery-worker", "kubemta_recipients_delivered_total", 1, provider="other")
    assert await asyncio.to_thread(_fetch_all, dovecot, "bob") == []


async def test_unknown_mailbox_bounces_with_5_1_1(
    mta_tcp: tuple[Stack, str], world: MailWorld, dovecot: Dovecot
) -> None:
    stack, server = mta_tcp
    bounce_mx = world.peer("bounce-mx")
    await bounce_mx.start()
    rcpt = f"nobody@{LOCAL_DOMAIN}"

    await send(server, SENDER, [rcpt], make_message(SENDER, [rcpt], "to nobody"))

    [bounce] = await bounce_mx.wait_for_messages(1, timeout=30)
    assert bounce.mail_from == "" and bounce.rcpt_tos == [SENDER]
    _, _, [recipient] = dsn_fields(bounce)
    assert recipient["Final-Recipient"] == f"rfc822; {rcpt}"
    assert recipient["Action"] == "failed"
    assert recipient["Status"] == "5.1.1"
    assert "550" in str(recipient["Diagnostic-Code"])
    assert recipient["Remote-MTA"] == f"dns; {dovecot.address}"
    assert await stack.metric("delivery-worker", "kubemta_delivery_attempts_total", result="bounced") == 1


async def test_known_and_unknown_mailbox_deliver_one_and_bounce_the_other_alone(
    mta_tcp: tuple[Stack, str], world: MailWorld, dovecot: Dovecot
) -> None:
    stack, server = mta_tcp
    bounce_mx = world.peer("bounce-mx")
    await bounce_mx.start()
    recipients = [f"alice@{LOCAL_DOMAIN}", f"nobody@{LOCAL_DOMAIN}", f"bob@{LOCAL_DOMAIN}"]
    original = make_message(SENDER, recipients, "mixed", BODY)

    await send(server, SENDER, recipients, original)

    [bounce] = await bounce_mx.wait_for_messages(1, timeout=30)
    _, _, blocks = dsn_fields(bounce)
    assert [(block["Final-Recipient"], block["Status"]) for block in blocks] == [
        (f"rfc822; nobody@{LOCAL_DOMAIN}", "5.1.1")
    ]
    [alice] = await mailbox(dovecot, "alice", 1)
    [bob] = await mailbox(dovecot, "bob", 1)
    assert alice.endswith(original) and bob.endswith(original)
    await metric_reaches(stack, "delivery-worker", "kubemta_delivery_attempts_total", 2, result="delivered")
    await asyncio.sleep(2)  # no retry, no second copy, no second bounce
    assert len(await asyncio.to_thread(_fetch_all, dovecot, "alice")) == 1
    assert len(bounce_mx.messages) == 1
    assert await stack.metric("delivery-worker", "kubemta_delivery_attempts_total", result="deferred") == 0


async def test_delivery_over_the_unix_socket(mta_unix: tuple[Stack, str], dovecot: Dovecot) -> None:
    stack, server = mta_unix
    original = make_message(SENDER, [f"bob@{LOCAL_DOMAIN}"], "over the socket", BODY)

    await send(server, SENDER, [f"bob@{LOCAL_DOMAIN}"], original)

    [stored] = await mailbox(dovecot, "bob", 1)
    assert stored.endswith(original)
    assert body_of(stored) == BODY.encode()

    async def logged_via_socket() -> bool:  # Dovecot stores the message before the worker reads its reply
        return f"via {dovecot.lmtp_socket}" in stack.log("delivery-worker")

    await eventually(logged_via_socket, within=10, what="the worker's log line for the socket delivery")
