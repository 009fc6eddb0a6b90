"""A message to several domains gets one DSN per event, not one per domain (issue 11, backscatter).

Three destination domains refuse their recipients; the four services run as processes and the
sender's MX must receive exactly one bounce listing all three, with kubemta_bounces_sent_total 1.
Another message's bounce, a minute apart in the same run, stays its own DSN.
"""

import asyncio

import pytest

from tests.e2e.conftest import MailWorld, make_message, send
from tests.e2e.test_pipeline import SENDER, dsn_fields, metric_reaches
from tests.harness.ports import free_port
from tests.harness.stack import Stack

pytestmark = [pytest.mark.broker, pytest.mark.e2e]

REFUSED = ["nobody@mx.e2e.test", "gone@other.e2e.test", "left@implicit.e2e.test"]


async def test_three_refusing_domains_make_one_bounce(stack: Stack, world: MailWorld) -> None:
    rules = {"nobody": "550 5.1.1 no such user", "gone": "550 5.1.1 gone", "left": "550 5.1.1 left the company"}
    peers = [world.peer(host, rules=rules) for host in ("mx1", "mx3", "implicit")]
    bounce_mx = world.peer("bounce-mx")
    for peer in (*peers, bounce_mx):
        await peer.start()
    server = f"127.0.0.1:{free_port()}"
    stack.env.update(world.env(smtp_listen=server, dsn_batch_window="2s"))
    await stack.start()

    outcome = await send(server, SENDER, REFUSED, make_message(SENDER, REFUSED, "three domains"))
    assert outcome.data is not None and outcome.data[0] == 250, outcome
    [bounce] = await bounce_mx.wait_for_messages(1, timeout=40)
    _, _, blocks = dsn_fields(bounce)
    assert sorted(block["Final-Recipient"] for block in blocks) == sorted(f"rfc822; {r}" for r in REFUSED)
    assert {block["Action"] for block in blocks} == {"failed"}
    reasons = [line for line in bounce.content.decode().splitlines() if line.startswith("    Reason: ")]
    assert reasons == ["    Reason: the recipient address does not exist (invalid recipient, permanent)"] * 3
    invalid = {"provider": "other", "class": "invalid_recipient"}  # 5.1.1: classified, one series
    await metric_reaches(stack, "queue-manager", "kubemta_recipients_bounced_total", 3, **invalid)
    assert await stack.metric("queue-manager", "kubemta_bounces_sent_total") == 1
    assert await stack.metric("queue-manager", "kubemta_jobs_created_total") == 3 + 1  # 3 jobs, then the DSN's

    # A second message bounces on its own: one DSN each, however the two overlap in the batcher.
    await send(server, SENDER, REFUSED[:1], make_message(SENDER, REFUSED[:1], "second message"))
    bounces = await bounce_mx.wait_for_messages(2, timeout=40)
    await asyncio.sleep(0)
    assert len(bounces) == 2
    assert await stack.metric("queue-manager", "kubemta_bounces_sent_total") == 2
