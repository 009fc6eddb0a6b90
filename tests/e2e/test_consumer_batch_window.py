"""End to end: the consumer services take `KUBEMTA_CONSUMER_BATCH_WINDOW` (here in milliseconds), every consumer
of the queue-manager, dns-resolver and delivery-worker holds its deliveries in a window of that length, and mail
sent at once through all of them arrives, each message once."""

import asyncio
import re

import pytest

from tests.e2e.conftest import MailWorld, make_message, send
from tests.harness.ports import free_port
from tests.harness.stack import Stack

pytestmark = [pytest.mark.broker, pytest.mark.e2e]

SENDER = "alice@sender.e2e.test"
SERVICES = ("ingress", "queue-manager", "dns-resolver", "delivery-worker")
CONSUMING = re.compile(r"^consuming (\S+) \(prefetch \d+, batch window (\S+)\)$")
CONSUMED = {
    "queue-manager": {"inbound", "inbound.large", "results", "results.large"},
    "dns-resolver": {"route", "route.large"},
    "delivery-worker": {"deliver", "deliver.large"},
}


async def test_every_consumer_holds_its_deliveries_in_the_configured_window_and_mail_flows(
    stack: Stack, world: MailWorld
) -> None:
    mx1 = world.peer("mx1")
    await mx1.start()
    smtp_port = free_port()
    stack.env.update(world.env(smtp_listen=f"127.0.0.1:{smtp_port}"))
    stack.env["KUBEMTA_CONSUMER_BATCH_WINDOW"] = "150ms"
    await stack.start(SERVICES)
    recipients = [f"user{number}@mx.e2e.test" for number in range(6)]
    outcomes = await asyncio.gather(
        *(
            send(f"127.0.0.1:{smtp_port}", SENDER, [rcpt], make_message(SENDER, [rcpt], f"window {rcpt}"))
            for rcpt in recipients
        )
    )
    for outcome in outcomes:
        assert outcome.data is not None and outcome.data[0] == 250, outcome
    messages = await mx1.wait_for_messages(len(recipients), timeout=30)
    assert sorted(rcpt for message in messages for rcpt in message.rcpt_tos) == sorted(recipients)
    for service, queues in CONSUMED.items():
        windows = {
            found.group(1): found.group(2)
            for event in stack.log_events(service)
            if (found := CONSUMING.match(str(event.get("message", ""))))
        }
        assert set(windows) >= queues, (service, windows)
        assert set(windows.values()) == {"150ms"}, (service, windows)
