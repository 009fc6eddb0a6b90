"""Ingress shutdown as a rollout sees it: not ready first, still accepting for a pause, then draining; and
no client is answered before its message's publish is (the broker connection outlives every confirm).

The real ingress process against the real broker, through a TCP proxy that can hold the broker's
replies (its publisher confirms) for as long as the test wants.
"""

import asyncio
import os
import signal
import smtplib
import socket

import pytest

from kubemta_common.amqp.topology import INBOUND
from tests.e2e.conftest import MailWorld, make_message, send
from tests.e2e.test_pipeline import eventually
from tests.harness.ports import free_port
from tests.harness.queues import first_message
from tests.harness.rabbitmq import Vhost
from tests.harness.stack import Stack
from tests.harness.tcp_proxy import TcpProxy

pytestmark = [pytest.mark.broker, pytest.mark.e2e]

SENDER = "app@sender.test"
RECIPIENT = "bob@mx.e2e.test"


def terminate(stack: Stack) -> None:
    """SIGTERM the ingress' process group, as the kubelet does (the stack still reaps it by PID later)."""
    os.killpg(stack.services["ingress"].process.pid, signal.SIGTERM)


def data_reply(address: str, message: bytes) -> tuple[int, bytes]:
    """One transaction; its reply to the final dot (the session may be closed with 421 right after it)."""
    host, port = address.rsplit(":", 1)
    client = smtplib.SMTP(host, int(port), timeout=30)
    try:
        client.ehlo("client.e2e.test")
        client.mail(SENDER)
        client.rcpt(RECIPIENT)
        return client.data(message)
    finally:
        client.close()


def greeting(address: str) -> bytes:
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as conn:
        return conn.recv(512)


async def test_readiness_goes_false_first_and_the_listener_keeps_accepting_for_the_pause(
    stack: Stack, world: MailWorld
) -> None:
    smtp = f"127.0.0.1:{free_port()}"
    stack.env.update(world.env(smtp_listen=smtp, shutdown_delay="3s"))
    await stack.start(("ingress",))
    assert (await stack.http("ingress", "/readyz"))[0] == 200
    terminate(stack)

    async def not_ready() -> bool:
        return (await stack.http("ingress", "/readyz"))[0] == 503

    await eventually(not_ready, within=10, what="/readyz to answer 503")
    # Not ready, but a client that the load balancer still sends gets served, message included.
    assert (await asyncio.to_thread(greeting, smtp)).startswith(b"220 ")
    outcome = await send(smtp, SENDER, [RECIPIENT], make_message(SENDER, [RECIPIENT], "during the pause"))
    assert outcome.data is not None and outcome.data[0] == 250, outcome
    codes = await stack.stop("ingress")
    assert codes == {"ingress": 0}
    log = stack.log("ingress")
    assert log.index("not ready any more") < log.index("SMTP listener smtp stopped")


async def test_a_publish_in_flight_is_answered_before_the_broker_connection_closes(
    stack: Stack, world: MailWorld, vhost: Vhost
) -> None:
    """The confirm comes 9 s after SIGTERM: past the 1 s drain and the listener's old 5 s close wait, within
    the 12 s publish timeout. The client must get its 250 (the message is queued) and not a 451, after which
    it would send the message again."""
    proxy = TcpProxy("127.0.0.1", vhost.node.host, vhost.node.port)
    await proxy.start()
    smtp = f"127.0.0.1:{free_port()}"
    stack.env.update(world.env(smtp_listen=smtp, drain_seconds="1s", publish_timeout="12s"))
    stack.env["KUBEMTA_AMQP_URL"] = f"amqp://guest:guest@127.0.0.1:{proxy.port}/{vhost.name}"
    try:
        await stack.start(("ingress",))
        proxy.hold_replies()  # the broker gets the message; its confirm waits in the proxy
        sending = asyncio.create_task(
            asyncio.to_thread(data_reply, smtp, make_message(SENDER, [RECIPIENT], "confirmed late"))
        )
        await asyncio.sleep(1.0)  # the message is sent and the ingress waits for the confirm
        assert not sending.done()
        terminate(stack)
        await asyncio.sleep(8.0)
        await proxy.restore()
        async with asyncio.timeout(20):
            code, text = await sending
        assert code == 250, (code, text)
        queued = await first_message(vhost.url, INBOUND)
        assert queued.message_id and text.decode().endswith(queued.message_id)
        assert (await stack.stop("ingress")) == {"ingress": 0}
    finally:
        await proxy.stop()
