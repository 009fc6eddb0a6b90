"""End to end: once the dns-resolver has published its route answers for two domains (the `routes` stream), the
queue-manager sends the jobs of the next message to both straight to `deliver`: they are delivered while the
resolver's `kubemta_routes_total` does not count them. (A message to one domain is the ingress' own to send
straight to `deliver`: test_direct_jobs_e2e.py.)"""

import asyncio

import pytest

from tests.e2e.conftest import MailWorld, make_message, send
from tests.harness.stack import Stack

pytestmark = [pytest.mark.broker, pytest.mark.e2e]

SENDER = "alice@sender.e2e.test"
RECIPIENTS = ["bob@mx.e2e.test", "carol@other.e2e.test"]
MAX_MESSAGES = 6
"""The answer reaches the queue-manager through a stream: a few messages at most until one uses it."""


SETTLE = 10.0
"""The resolver counts a route once its `deliver` publish was confirmed, which can come after the worker delivered."""


async def resolver_routes(stack: Stack, expected: float) -> float:
    """The resolver's count of routes found by MX, polled (bounded) until it reaches `expected`."""
    count = 0.0
    for _ in range(int(SETTLE / 0.1)):
        count = await stack.metric("dns-resolver", "kubemta_routes_total", source="mx", result="ok")
        if count >= expected:
            break
        await asyncio.sleep(0.1)
    return count


async def test_the_second_message_to_two_domains_skips_the_resolver(mta: tuple[Stack, str], world: MailWorld) -> None:
    stack, server = mta
    mx1 = world.peer("mx1")
    await mx1.start()
    mx3 = world.peer("mx3")
    await mx3.start()
    sent = used = 0
    while used < 2 and sent < MAX_MESSAGES:
        sent += 1
        message = make_message(SENDER, RECIPIENTS, f"shortcut {sent}")
        outcome = await send(server, SENDER, RECIPIENTS, message)
        assert outcome.data is not None and outcome.data[0] == 250, outcome.data
        await mx1.wait_for_messages(sent, timeout=30)
        await mx3.wait_for_messages(sent, timeout=30)
        if sent == 1:  # the first one's jobs went through the resolver, which shares its answers
            assert await resolver_routes(stack, 2) == 2
        used = int(await stack.metric("queue-manager", "kubemta_route_answers_total", result="used"))
    assert used >= 2, f"no message of {sent} used the resolver's answers"
    assert len(mx1.messages) == len(mx3.messages) == sent
    assert await stack.metric("dns-resolver", "kubemta_route_answers_published_total") >= 2
    # the shortcut jobs were never counted by the resolver; two-domain messages are never the ingress' to send
    assert await resolver_routes(stack, 2 * sent - used) == 2 * sent - used
    assert await stack.metric("ingress", "kubemta_route_answers_total", result="used") == 0
