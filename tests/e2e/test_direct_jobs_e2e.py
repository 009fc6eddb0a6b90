"""End to end: the ingress queues a message's one job straight to `deliver` once the dns-resolver's answer for its
domain is fresh (kubemta_ingress.direct_jobs), so such a message is delivered while the queue-manager is down; a
message of two domains still waits in `inbound` for it; and a `deliver` queue that refuses the job gets the client
451, never 250, with nothing delivered."""

import asyncio

import pytest

from tests.e2e.conftest import MailWorld, make_message, send
from tests.e2e.test_pipeline import SENDER, eventually
from tests.harness.ports import free_port
from tests.harness.rabbitmq import Vhost
from tests.harness.smtp_peer import ScriptedPeer
from tests.harness.stack import Stack

pytestmark = [pytest.mark.broker, pytest.mark.e2e]

RECIPIENT = "bob@mx.e2e.test"
OTHER = "carol@other.e2e.test"
MAX_MESSAGES = 20
"""The answer reaches the ingress through the `routes` stream: a few messages at most until one uses it."""


async def until_the_ingress_uses_an_answer(stack: Stack, server: str, mx1: ScriptedPeer) -> int:
    """Send messages to RECIPIENT (each delivered) until the ingress queued one straight to `deliver`; how many."""
    for sent in range(1, MAX_MESSAGES + 1):
        outcome = await send(server, SENDER, [RECIPIENT], make_message(SENDER, [RECIPIENT], f"warm-up {sent}"))
        assert outcome.data is not None and outcome.data[0] == 250, outcome.data
        await mx1.wait_for_messages(sent, timeout=30)
        if await stack.metric("ingress", "kubemta_route_answers_total", result="used") >= 1:
            return sent
        await asyncio.sleep(0.5)
    pytest.fail(f"the ingress used no route answer in {MAX_MESSAGES} messages")


async def test_a_message_to_an_answered_domain_is_delivered_while_the_queue_manager_is_down(
    mta: tuple[Stack, str], world: MailWorld, vhost: Vhost
) -> None:
    stack, server = mta
    mx1 = world.peer("mx1")
    await mx1.start()
    mx3 = world.peer("mx3")
    await mx3.start()
    sent = await until_the_ingress_uses_an_answer(stack, server, mx1)
    jobs_before = await stack.metric("ingress", "kubemta_jobs_created_total")
    assert jobs_before >= 1  # the ingress counted the job it created

    await stack.stop("queue-manager")
    one_domain = make_message(SENDER, [RECIPIENT], "while the queue-manager is down")
    outcome = await send(server, SENDER, [RECIPIENT], one_domain)
    assert outcome.data is not None and outcome.data[0] == 250, outcome.data
    direct_id = outcome.data[1].decode().removeprefix("2.0.0 Ok: queued as ")
    delivered = await mx1.wait_for_messages(sent + 1, timeout=30)
    assert b"while the queue-manager is down" in delivered[-1].content
    assert await stack.metric("ingress", "kubemta_jobs_created_total") == jobs_before + 1

    # two domains: two jobs, which only the queue-manager queues (all or none); it waits in `inbound`
    two_domains = make_message(SENDER, [RECIPIENT, OTHER], "two domains")
    outcome = await send(server, SENDER, [RECIPIENT, OTHER], two_domains)
    assert outcome.data is not None and outcome.data[0] == 250, outcome.data

    async def waits_in_inbound() -> bool:  # queue statistics lag a few seconds behind
        return (await asyncio.to_thread(vhost.queue_depths)).get("inbound", 0) == 1

    await eventually(waits_in_inbound, within=20, what="the two-domain message in `inbound`")
    assert len(mx1.messages) == sent + 1 and mx3.messages == []
    await stack.start(("queue-manager",))
    await mx3.wait_for_messages(1, timeout=30)
    await mx1.wait_for_messages(sent + 2, timeout=30)

    # the direct message's lifecycle as the queue-manager would have written it: received, queued, routed
    logged = stack.log_events("ingress")
    kinds = [event["event"] for event in logged if event.get("queue_id") == direct_id and event.get("event")]
    assert kinds == ["received", "queued", "routed"]


async def test_a_deliver_queue_refusing_the_job_gets_451_and_nothing_is_delivered(
    stack: Stack, world: MailWorld, vhost: Vhost
) -> None:
    smtp_port = free_port()
    server = f"127.0.0.1:{smtp_port}"
    stack.env.update(world.env(smtp_listen=server))
    await stack.start()
    mx1 = world.peer("mx1")
    await mx1.start()
    sent = await until_the_ingress_uses_an_answer(stack, server, mx1)

    # the broker now refuses publishes to `deliver` (a full queue that rejects new messages: basic.nack); with the
    # worker stopped, nothing leaves the queue, so it is full after at most one more message
    await stack.stop("delivery-worker")
    vhost.node.ctl(
        "set_policy", "-p", vhost.name, "--apply-to", "queues", "refuse-deliver", "^deliver$",
        '{"max-length": 0, "overflow": "reject-publish"}',
    )  # fmt: skip
    attempts: list[tuple[str, int]] = []
    try:

        async def refused() -> bool:  # the policy reaches the queue within moments, the queue is full after one
            text = f"attempt {len(attempts) + 1}"
            outcome = await send(server, SENDER, [RECIPIENT], make_message(SENDER, [RECIPIENT], text))
            assert outcome.data is not None
            attempts.append((text, outcome.data[0]))
            if outcome.data[0] == 250:
                return False
            assert outcome.data[0] == 451 and outcome.data[1].startswith(b"4.3.0"), outcome.data
            return True

        await eventually(refused, within=20, what="a 451 while `deliver` refuses publishes")
    finally:
        # raised rather than cleared: RabbitMQ 3.10's quorum queue kept refusing after a clear_policy (its overflow
        # state is only looked at again under a limit)
        vhost.node.ctl(
            "set_policy", "-p", vhost.name, "--apply-to", "queues", "refuse-deliver", "^deliver$",
            '{"max-length": 1000000, "overflow": "reject-publish"}',
        )  # fmt: skip
    await stack.start(("delivery-worker",))

    async def accepted_again() -> bool:  # the policy is lifted within moments: the client's retries get 250
        text = f"attempt {len(attempts) + 1}"
        outcome = await send(server, SENDER, [RECIPIENT], make_message(SENDER, [RECIPIENT], text))
        assert outcome.data is not None and outcome.data[0] in {250, 451}, outcome.data
        attempts.append((text, outcome.data[0]))
        return outcome.data[0] == 250

    await eventually(accepted_again, within=20, what="250 again once `deliver` takes publishes")
    queued = [text for text, code in attempts if code == 250]
    await mx1.wait_for_messages(sent + len(queued), timeout=30)
    await asyncio.sleep(1.0)  # anything else would arrive meanwhile
    assert len(mx1.messages) == sent + len(queued)
    subjects = {
        line
        for message in mx1.messages
        for line in message.content.split(b"\r\n")
        if line.startswith(b"Subject: attempt")
    }
    assert subjects == {f"Subject: {text}".encode() for text in queued}, "exactly the 250s were delivered, no 451"
    refusals = sum(1 for _, code in attempts if code == 451)
    assert await stack.metric("ingress", "kubemta_messages_rejected_total", reason="queue_unavailable") == refusals
