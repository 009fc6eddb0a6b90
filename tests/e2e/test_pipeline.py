"""End to end: mail in over SMTP, through RabbitMQ and the four service processes, out to
real SMTP peers found through a real DNS server — or back to the sender as a DSN."""

import asyncio
import email
import email.policy
from collections.abc import Awaitable, Callable
from email.message import Message

import pytest

from tests.e2e.conftest import MailWorld, make_message, send
from tests.harness.rabbitmq import Vhost
from tests.harness.smtp_peer import ReceivedMessage
from tests.harness.stack import Stack

pytestmark = [pytest.mark.broker, pytest.mark.e2e]

SENDER = "alice@sender.e2e.test"


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 20.0, what: str = "condition") -> None:
    """Poll an async check until it holds; fail after `within` seconds."""
    try:
        async with asyncio.timeout(within):
            while True:
                if await check():
                    return
                await asyncio.sleep(0.2)
    except TimeoutError:
        pytest.fail(f"timed out after {within:.0f}s waiting for {what}")


async def metric_reaches(stack: Stack, service: str, sample: str, value: float, **labels: str) -> None:
    async def check() -> bool:
        return await stack.metric(service, sample, **labels) >= value

    await eventually(check, what=f"{service} {sample}{labels} >= {value}")


def parse(message: ReceivedMessage) -> Message:
    return email.message_from_bytes(message.content, policy=email.policy.compat32)


def _parts(message: Message) -> list[Message]:
    payload = message.get_payload()
    assert isinstance(payload, list)
    return [part for part in payload if isinstance(part, Message)]


def dsn_fields(bounce: ReceivedMessage) -> tuple[Message, Message, list[Message]]:
    """(report, per-message fields, per-recipient field blocks) of a DSN as the stdlib parses it."""
    report = parse(bounce)
    assert report.get_content_type() == "multipart/report"
    assert report.get_param("report-type") == "delivery-status"
    parts = _parts(report)
    assert [part.get_content_type() for part in parts] == [
        "text/plain",
        "message/delivery-status",
        "text/rfc822-headers",
    ]
    blocks = _parts(parts[1])
    return report, blocks[0], blocks[1:]


def original_headers(report: Message) -> str:
    """The text/rfc822-headers part of a DSN."""
    headers = _parts(report)[2].get_payload(decode=True)
    assert isinstance(headers, bytes)
    return headers.decode()


async def test_mail_is_delivered_to_the_preferred_mx(mta: tuple[Stack, str], world: MailWorld) -> None:
    stack, server = mta
    mx1, mx2 = world.peer("mx1"), world.peer("mx2")
    await mx1.start()
    await mx2.start()
    message = make_message(SENDER, ["bob@mx.e2e.test"], "preferred mx", body="line one\r\n.dot line\r\nend\r\n")
    outcome = await send(server, SENDER, ["bob@mx.e2e.test"], message)
    assert outcome.data is not None
    code, text = outcome.data
    assert code == 250 and text.startswith(b"2.0.0 Ok: queued as "), outcome.data
    queue_id = text.rsplit(b" ", 1)[1].decode()
    [delivered] = await mx1.wait_for_messages(1, timeout=20)
    assert mx2.messages == []
    assert delivered.mail_from == SENDER and delivered.rcpt_tos == ["bob@mx.e2e.test"]
    assert delivered.content.startswith(b"Received: from client.e2e.test")
    assert f"id {queue_id}".encode() in delivered.content.split(b"\r\n\r\n")[0].replace(b"\r\n\t", b" ")
    assert delivered.content.endswith(message)  # body byte-identical, dot line included
    await metric_reaches(stack, "delivery-worker", "kubemta_recipients_delivered_total", 1, provider="other")
    assert await stack.metric("ingress", "kubemta_messages_received_total") == 1
    assert await stack.metric("delivery-worker", "kubemta_delivery_attempts_total", result="delivered") == 1
    assert await stack.metric("dns-resolver", "kubemta_dns_lookups_total", result="ok") >= 1
    assert await stack.metric("delivery-worker", "kubemta_queue_time_seconds_count") == 1
    for service in ("ingress", "queue-manager", "dns-resolver", "delivery-worker"):
        assert await stack.metric(service, "kubemta_broker_connected", service=service) == 1
    # every service logged about this message under its queue id
    for service in ("ingress", "queue-manager", "dns-resolver", "delivery-worker"):
        assert any(event.get("queue_id") == queue_id for event in stack.log_events(service)), service


async def test_next_mx_is_used_when_the_first_refuses_connections(mta: tuple[Stack, str], world: MailWorld) -> None:
    _, server = mta
    alive = world.peer("alive")  # nothing listens at "dead": connection refused
    await alive.start()
    outcome = await send(
        server, SENDER, ["carol@fallback.e2e.test"], make_message(SENDER, ["carol@fallback.e2e.test"], "fallback")
    )
    assert outcome.data and outcome.data[0] == 250
    [delivered] = await alive.wait_for_messages(1, timeout=20)
    assert delivered.rcpt_tos == ["carol@fallback.e2e.test"]


async def test_domain_without_mx_gets_implicit_mx_delivery(mta: tuple[Stack, str], world: MailWorld) -> None:
    _, server = mta
    host = world.peer("implicit")
    await host.start()
    await send(server, SENDER, ["dan@implicit.e2e.test"], make_message(SENDER, ["dan@implicit.e2e.test"], "implicit"))
    [delivered] = await host.wait_for_messages(1, timeout=20)
    assert delivered.rcpt_tos == ["dan@implicit.e2e.test"]


async def test_temporary_failure_is_retried_then_delivered(mta: tuple[Stack, str], world: MailWorld) -> None:
    stack, server = mta
    mx1 = world.peer("mx1", rules={"busy": ["451 4.3.0 Try again later", "250 2.1.5 Ok"]})
    await mx1.start()
    await send(server, SENDER, ["busy@mx.e2e.test"], make_message(SENDER, ["busy@mx.e2e.test"], "retry"))
    [delivered] = await mx1.wait_for_messages(1, timeout=30)
    assert delivered.rcpt_tos == ["busy@mx.e2e.test"]
    await metric_reaches(stack, "delivery-worker", "kubemta_recipients_delivered_total", 1, provider="other")
    assert await stack.metric("queue-manager", "kubemta_recipients_deferred_total", provider="other") == 1
    assert await stack.metric("delivery-worker", "kubemta_delivery_attempts_total", result="deferred") == 1
    assert await stack.metric("queue-manager", "kubemta_bounces_sent_total") == 0


async def test_permanent_failure_bounces_a_dsn_to_the_senders_mx(mta: tuple[Stack, str], world: MailWorld) -> None:
    stack, server = mta
    mx1 = world.peer("mx1", rules={"nobody": "550 5.1.1 <nobody@mx.e2e.test>: Recipient address rejected"})
    bounce_mx = world.peer("bounce-mx")
    await mx1.start()
    await bounce_mx.start()
    original = make_message(SENDER, ["nobody@mx.e2e.test"], "will bounce")
    await send(server, SENDER, ["nobody@mx.e2e.test"], original)
    [bounce] = await bounce_mx.wait_for_messages(1, timeout=30)
    assert bounce.mail_from == "" and bounce.rcpt_tos == [SENDER]
    report, per_message, [recipient] = dsn_fields(bounce)
    assert report["To"] and SENDER in report["To"]
    assert report["Auto-Submitted"] == "auto-replied"
    assert per_message["Reporting-MTA"] == "dns; mta.kubemta.test"
    assert per_message["Arrival-Date"]
    assert recipient["Final-Recipient"] == "rfc822; nobody@mx.e2e.test"
    assert recipient["Action"] == "failed"
    assert recipient["Status"] == "5.1.1"
    assert recipient["Remote-MTA"] == "dns; mx1.e2e.test"
    assert recipient["Diagnostic-Code"].startswith("smtp; 550 5.1.1")
    headers = original_headers(report)
    assert "Subject: will bounce" in headers and "Message-ID: <will-bounce@e2e.test>" in headers
    await metric_reaches(stack, "queue-manager", "kubemta_recipients_bounced_total", 1, provider="other")
    assert await stack.metric("queue-manager", "kubemta_bounces_sent_total") == 1
    assert await stack.metric("delivery-worker", "kubemta_delivery_attempts_total", result="bounced") == 1


async def test_message_older_than_the_queue_lifetime_bounces(stack: Stack, world: MailWorld) -> None:
    from tests.harness.ports import free_port

    smtp_port = free_port()
    stack.env.update(world.env(smtp_listen=f"127.0.0.1:{smtp_port}", max_queue_lifetime="3s", retry_schedule="1s"))
    await stack.start()
    mx1 = world.peer("mx1", rules={"slow": "450 4.2.1 Mailbox temporarily unavailable"})
    bounce_mx = world.peer("bounce-mx")
    await mx1.start()
    await bounce_mx.start()
    await send(
        f"127.0.0.1:{smtp_port}", SENDER, ["slow@mx.e2e.test"], make_message(SENDER, ["slow@mx.e2e.test"], "expires")
    )
    [bounce] = await bounce_mx.wait_for_messages(1, timeout=40)
    _, _, [recipient] = dsn_fields(bounce)
    assert recipient["Action"] == "failed"
    assert recipient["Status"] == "4.4.7"
    assert "450 4.2.1" in recipient["Diagnostic-Code"]
    assert mx1.messages == []
    assert await stack.metric("queue-manager", "kubemta_recipients_deferred_total", provider="other") >= 1


async def test_nonexistent_domain_bounces_with_5_1_2(mta: tuple[Stack, str], world: MailWorld) -> None:
    stack, server = mta
    bounce_mx = world.peer("bounce-mx")
    await bounce_mx.start()
    await send(server, SENDER, ["erin@nosuch.e2e.test"], make_message(SENDER, ["erin@nosuch.e2e.test"], "nxdomain"))
    [bounce] = await bounce_mx.wait_for_messages(1, timeout=30)
    _, _, [recipient] = dsn_fields(bounce)
    assert recipient["Final-Recipient"] == "rfc822; erin@nosuch.e2e.test"
    assert recipient["Status"] == "5.1.2"
    assert await stack.metric("dns-resolver", "kubemta_dns_lookups_total", result="nxdomain") >= 1


async def test_null_mx_domain_bounces_with_5_1_10(mta: tuple[Stack, str], world: MailWorld) -> None:
    _, server = mta
    bounce_mx = world.peer("bounce-mx")
    await bounce_mx.start()
    await send(server, SENDER, ["frank@nullmx.e2e.test"], make_message(SENDER, ["frank@nullmx.e2e.test"], "nullmx"))
    [bounce] = await bounce_mx.wait_for_messages(1, timeout=30)
    _, _, [recipient] = dsn_fields(bounce)
    assert recipient["Status"] == "5.1.10"


async def test_servfail_defers_and_never_bounces(mta: tuple[Stack, str], world: MailWorld, vhost: Vhost) -> None:
    stack, server = mta
    bounce_mx = world.peer("bounce-mx")
    await bounce_mx.start()
    await send(server, SENDER, ["gina@broken.test"], make_message(SENDER, ["gina@broken.test"], "servfail"))
    await metric_reaches(stack, "queue-manager", "kubemta_recipients_deferred_total", 2, provider="other")
    assert await stack.metric("dns-resolver", "kubemta_dns_lookups_total", result="servfail") >= 2
    assert bounce_mx.messages == []
    assert await stack.metric("queue-manager", "kubemta_bounces_sent_total") == 0
    assert await stack.metric("queue-manager", "kubemta_recipients_bounced_total", provider="other") == 0


async def test_null_sender_is_never_bounced(mta: tuple[Stack, str], world: MailWorld) -> None:
    stack, server = mta
    mx1 = world.peer("mx1", rules={"gone": "550 5.1.1 No such user"})
    bounce_mx = world.peer("bounce-mx")
    await mx1.start()
    await bounce_mx.start()
    await send(server, "", ["gone@mx.e2e.test"], make_message("", ["gone@mx.e2e.test"], "null sender"))
    await metric_reaches(stack, "queue-manager", "kubemta_recipients_bounced_total", 1, provider="other")
    await asyncio.sleep(1.0)
    assert bounce_mx.messages == [] and bounce_mx.connections == 0
    assert await stack.metric("queue-manager", "kubemta_bounces_sent_total") == 0


async def test_three_recipients_at_two_domains_make_two_jobs(mta: tuple[Stack, str], world: MailWorld) -> None:
    stack, server = mta
    mx1, mx3 = world.peer("mx1"), world.peer("mx3")
    await mx1.start()
    await mx3.start()
    rcpts = ["h1@mx.e2e.test", "h2@MX.e2e.test", "h3@other.e2e.test"]
    await send(server, SENDER, rcpts, make_message(SENDER, rcpts, "two domains"))
    [at_mx] = await mx1.wait_for_messages(1, timeout=20)
    [at_other] = await mx3.wait_for_messages(1, timeout=20)
    assert sorted(at_mx.rcpt_tos) == ["h1@mx.e2e.test", "h2@MX.e2e.test"]
    assert at_other.rcpt_tos == ["h3@other.e2e.test"]
    assert await stack.metric("queue-manager", "kubemta_jobs_created_total") == 2
    await metric_reaches(stack, "delivery-worker", "kubemta_recipients_delivered_total", 3, provider="other")


async def test_relay_is_refused_outside_relay_networks(stack: Stack, world: MailWorld) -> None:
    from tests.harness.ports import free_port

    smtp_port = free_port()
    stack.env.update(
        world.env(smtp_listen=f"127.0.0.1:{smtp_port}", relay_networks="192.0.2.0/24", local_domains="local.e2e.test")
    )
    await stack.start(("ingress",))
    outcome = await send(
        f"127.0.0.1:{smtp_port}",
        SENDER,
        ["x@mx.e2e.test", "y@local.e2e.test"],
        make_message(SENDER, ["y@local.e2e.test"], "relay"),
    )
    (relay_code, relay_text), (local_code, _) = outcome.rcpts
    assert relay_code == 554 and relay_text.startswith(b"5.7.1"), outcome.rcpts
    assert local_code == 250
    assert await stack.metric("ingress", "kubemta_messages_rejected_total", reason="relay_denied") == 1
