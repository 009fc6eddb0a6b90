"""Large mail goes the whole way in the large lanes: inbound.large, route.large, deliver.large, results.large
and retry.<delay>.large back to route.large, and arrives byte for byte; small mail keeps the small lanes."""

import pytest

from tests.e2e.conftest import MailWorld, make_message, send
from tests.e2e.test_pipeline import SENDER, metric_reaches
from tests.harness.ports import free_port
from tests.harness.stack import Stack

pytestmark = [pytest.mark.broker, pytest.mark.e2e]


def log_mentions(stack: Stack, service: str, text: str) -> bool:
    return text in stack.log(service)


async def test_a_large_message_is_deferred_retried_and_delivered_through_the_large_lanes(
    stack: Stack, world: MailWorld
) -> None:
    mx1 = world.peer("mx1", rules={"later": ["451 4.3.0 try again", "250 2.1.5 Ok"]})
    await mx1.start()
    server = f"127.0.0.1:{free_port()}"
    stack.env.update(world.env(smtp_listen=server))
    await stack.start()

    body = "".join(f"line {n:06d} " + "x" * 60 + "\r\n" for n in range(20_000))  # about 1.4 MB
    large = make_message(SENDER, ["later@mx.e2e.test"], "large", body)
    small = make_message(SENDER, ["small@mx.e2e.test"], "small")
    for message, rcpt in ((large, "later@mx.e2e.test"), (small, "small@mx.e2e.test")):
        outcome = await send(server, SENDER, [rcpt], message)
        assert outcome.data is not None and outcome.data[0] == 250, outcome

    delivered = await mx1.wait_for_messages(2, timeout=60)
    by_rcpt = {tuple(message.rcpt_tos): message for message in delivered}
    assert by_rcpt[("later@mx.e2e.test",)].content.endswith(large)  # after kubemta's Received: header
    assert by_rcpt[("small@mx.e2e.test",)].content.endswith(small)
    await metric_reaches(stack, "queue-manager", "kubemta_recipients_deferred_total", 1, provider="other")
    # The peer has the message before the worker has read its 250 and ended the job.
    await metric_reaches(stack, "delivery-worker", "kubemta_recipients_delivered_total", 2, provider="other")
    assert await stack.metric("delivery-worker", "kubemta_recipients_delivered_total", provider="other") == 2
    for service in ("queue-manager", "dns-resolver", "delivery-worker"):
        assert log_mentions(stack, service, "large lanes: prefetch"), service
