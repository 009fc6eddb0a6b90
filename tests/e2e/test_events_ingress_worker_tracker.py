"""The ingress' duplicate check against the real tracker, both as processes (their console scripts) on a test
vhost: a client that retries a message the ingress already queued (same Message-ID, envelope and body) gets
`250` with the first queue id, and the message is on `inbound` once; the tracker's index is fed by the
ingress' `received` event on the `events` stream.

The retry is sent once the tracker synced its index with the stream (a barrier, through its delivered look-up):
its `/v1/duplicates/received` look-up does not sync by itself (yet), so a retry within a few milliseconds of the
first `250` may not be recognised (reported to the lead; the ingress' own side needs nothing more).
"""

import asyncio
import smtplib
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from kubemta.v1 import message_pb2
from kubemta_common.amqp.topology import INBOUND
from tests.harness.ports import free_port
from tests.harness.queues import take_all
from tests.harness.rabbitmq import Vhost
from tests.harness.stack import Stack

pytestmark = [pytest.mark.broker, pytest.mark.e2e]

TOKEN = "ingress-read-token-0123456789"
WITHIN = 30.0


@pytest.fixture
async def running(stack: Stack, tmp_path: Path) -> AsyncIterator[int]:
    smtp_port = free_port("127.0.0.1")
    tracker_port = free_port("127.0.0.1")
    stack.env.update(
        {
            "KUBEMTA_LOCAL_DOMAINS": "example.org",
            "KUBEMTA_RELAY_NETWORKS": "127.0.0.0/8",
            "KUBEMTA_SMTP_LISTEN": f"127.0.0.1:{smtp_port}",
            "KUBEMTA_TRACKER_LISTEN": f"127.0.0.1:{tracker_port}",
            "KUBEMTA_TRACKER_URL": f"http://127.0.0.1:{tracker_port}",
            "KUBEMTA_TRACKER_TOKEN": TOKEN,
            "KUBEMTA_TRACKER_READ_TOKENS": f"ingress:{TOKEN}",
            "KUBEMTA_INDEX_PATH": str(tmp_path / "tracker-index.sqlite3"),
        }
    )
    await stack.start(("tracker", "ingress"), within=60.0)
    yield smtp_port


def sync_tracker(stack: Stack) -> None:
    """A look-up that makes the tracker sync its index with the events stream (a barrier) before it answers."""
    url = stack.env["KUBEMTA_TRACKER_URL"] + "/v1/duplicates/jobs/no-such-job/delivered"
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=WITHIN) as response:
        assert response.status == 200


def smtp_send(port: int, recipients: list[str], content: bytes) -> str:
    """One transaction with smtplib; the text of the reply to the end of DATA."""
    with smtplib.SMTP("127.0.0.1", port, timeout=WITHIN) as client:
        client.ehlo("client.example")
        assert client.mail("a@example.net")[0] == 250
        for rcpt in recipients:
            assert client.rcpt(rcpt)[0] == 250
        code, text = client.data(content)
        assert code == 250, text
        return text.decode().removeprefix("2.0.0 Ok: queued as ")


async def inbound(url: str) -> list[message_pb2.AcceptedMessage]:
    """Every message on `inbound` now (taken)."""
    return [message_pb2.AcceptedMessage.FromString(body) for body in await take_all(url, INBOUND, WITHIN)]


async def test_the_real_tracker_recognises_a_client_retry(vhost: Vhost, running: int, stack: Stack) -> None:
    content = b"From: a@example.net\r\nTo: bob@example.org\r\nMessage-ID: <e2e-retry@example.net>\r\n\r\nHi.\r\n"
    first = await asyncio.to_thread(smtp_send, running, ["bob@example.org"], content)
    await asyncio.to_thread(sync_tracker, stack)
    again = await asyncio.to_thread(smtp_send, running, ["bob@example.org"], content)
    other = await asyncio.to_thread(smtp_send, running, ["bob@example.org", "eve@example.org"], content)
    assert again == first, stack.log("ingress")[-3000:]
    assert other != first
    queued = await inbound(vhost.url)
    assert sorted(m.queue_id for m in queued) == sorted([first, other])
    assert {m.message_id for m in queued} == {"<e2e-retry@example.net>"}
