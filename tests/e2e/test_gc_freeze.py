"""End to end: each of the four services, once set up, exempts the objects it made while starting from garbage
collection (kubemta_common.gc_tuning: full collections under load stopped each service for 90–200 ms), and mail
flows through them afterwards."""

import re

import pytest

from tests.e2e.conftest import MailWorld, make_message, send
from tests.harness.ports import free_port
from tests.harness.stack import Stack

pytestmark = [pytest.mark.broker, pytest.mark.e2e]

SENDER = "alice@sender.e2e.test"
SERVICES = ("ingress", "queue-manager", "dns-resolver", "delivery-worker")
FROZEN = re.compile(r"^(\d+) objects made at startup are exempt from garbage collection$")


async def test_every_service_freezes_its_startup_objects_and_mail_still_flows(stack: Stack, world: MailWorld) -> None:
    mx1 = world.peer("mx1")
    await mx1.start()
    smtp_port = free_port()
    stack.env.update(world.env(smtp_listen=f"127.0.0.1:{smtp_port}"))
    await stack.start(SERVICES)
    outcome = await send(
        f"127.0.0.1:{smtp_port}", SENDER, ["bob@mx.e2e.test"], make_message(SENDER, ["bob@mx.e2e.test"], "after")
    )
    assert outcome.data is not None and outcome.data[0] == 250, outcome
    [message] = await mx1.wait_for_messages(1, timeout=30)
    assert message.rcpt_tos == ["bob@mx.e2e.test"]
    for service in SERVICES:
        counts = [
            int(found.group(1))
            for event in stack.log_events(service)
            if (found := FROZEN.match(str(event.get("message", ""))))
        ]
        assert len(counts) == 1 and counts[0] > 10_000, (service, counts)
