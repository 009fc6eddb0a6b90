"""End to end: no backscatter. Mail from a forged sender to an unknown user of a local domain is refused at
RCPT (550 5.1.1, the ingress asked the mailbox server, a real Dovecot, over LMTP), so it is never queued and no
DSN ever goes to the forged sender, while a known user of the same message gets the mail.

Without recipient verification the unknown user was accepted, Dovecot refused it at delivery, and the
queue-manager bounced it to the (forged) sender: test_lmtp_dovecot.py still covers that delivery path, for a
mailbox that disappears between RCPT and delivery.
"""

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import MailWorld, make_message, send
from tests.e2e.test_lmtp_dovecot import mailbox
from tests.e2e.test_pipeline import metric_reaches
from tests.harness.dovecot import Dovecot
from tests.harness.ports import free_port
from tests.harness.stack import Stack

pytestmark = [pytest.mark.broker, pytest.mark.e2e]

LOCAL_DOMAIN = "mailbox.e2e.test"
FORGED_SENDER = "victim@sender.e2e.test"  # sender.e2e.test's MX is bounce-mx: any DSN would land there
USERS = {"alice": "alice-password", "bob": "bob-password"}
DOVECOT_OCTET = 62  # outside tests/e2e/conftest.py HOSTS and test_lmtp_dovecot.py's 61


@pytest.fixture
def dovecot(loopback_net: str) -> Iterator[Dovecot]:
    workdir = Path(tempfile.mkdtemp(prefix="kubemta-dovecot-"))  # traversable by Dovecot's mail user
    address = f"{loopback_net}.{DOVECOT_OCTET}"
    server = Dovecot(workdir, address, free_port(address), free_port(address), USERS)
    try:
        with server:
            yield server
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
async def mta(stack: Stack, world: MailWorld, dovecot: Dovecot) -> AsyncIterator[str]:
    """The four services, LOCAL_DOMAIN delivered over LMTP to Dovecot; yields the SMTP address."""
    smtp_port = free_port()
    stack.env.update(
        world.env(
            smtp_listen=f"127.0.0.1:{smtp_port}",
            local_domains=LOCAL_DOMAIN,
            relay_networks="",  # the sending client is a stranger on the internet
            transports=f"{LOCAL_DOMAIN}=lmtp:[{dovecot.address}]:{dovecot.lmtp_port}",
        )
    )
    await stack.start()
    yield f"127.0.0.1:{smtp_port}"


async def test_unknown_local_users_are_refused_at_rcpt_and_never_bounced_to_a_forged_sender(
    mta: str, stack: Stack, world: MailWorld, dovecot: Dovecot
) -> None:
    bounce_mx = world.peer("bounce-mx")  # where a DSN to the forged sender would arrive
    await bounce_mx.start()
    unknown, known = f"nobody@{LOCAL_DOMAIN}", f"alice@{LOCAL_DOMAIN}"
    original = make_message(FORGED_SENDER, [unknown, known], "backscatter")

    mixed = await send(mta, FORGED_SENDER, [unknown, known], original)
    only_unknown = await send(mta, FORGED_SENDER, [f"ghost@{LOCAL_DOMAIN}"], original)

    code, text = mixed.rcpts[0]
    assert code == 550, text
    assert text.decode().startswith(
        f"5.1.1 <{unknown}>: Recipient address rejected: undeliverable address: "
        f"host {dovecot.address}[{dovecot.address}] said: 550 5.1.1 <{unknown}> User doesn't exist"
    )
    assert mixed.rcpts[1][0] == 250 and mixed.data is not None and mixed.data[0] == 250
    assert only_unknown.rcpts[0][0] == 550 and only_unknown.data is None  # nothing to send: never queued

    [stored] = await mailbox(dovecot, known.split("@")[0], 1)
    assert stored.endswith(original)
    # The message's one recipient was delivered and its job ended at the worker: any DSN would have been made by now.
    await metric_reaches(stack, "delivery-worker", "kubemta_recipients_delivered_total", 1, provider="other")
    assert await stack.metric("queue-manager", "kubemta_recipients_bounced_total", provider="other") == 0
    assert await stack.metric("queue-manager", "kubemta_bounces_sent_total") == 0
    assert await stack.metric("ingress", "kubemta_messages_rejected_total", reason="unknown_recipient") == 2
    assert await stack.metric("ingress", "kubemta_messages_received_total") == 1
    await asyncio.sleep(1)  # and nothing reaches the forged sender's MX afterwards
    assert bounce_mx.messages == [] and bounce_mx.connections == 0
