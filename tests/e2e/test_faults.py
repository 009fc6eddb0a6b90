"""Faults: nothing is acknowledged that is not safely queued, and a crash loses nothing."""

import asyncio
import subprocess

import pytest

from tests.e2e.conftest import MailWorld, make_message, send
from tests.e2e.test_pipeline import SENDER, eventually
from tests.harness.ports import free_port
from tests.harness.rabbitmq import Vhost
from tests.harness.stack import Stack
from tests.harness.tcp_proxy import TcpProxy
from tests.harness.tools import swaks

pytestmark = [pytest.mark.broker, pytest.mark.e2e]


async def test_unreachable_broker_gives_451_never_250(stack: Stack, world: MailWorld, vhost: Vhost) -> None:
    proxy = TcpProxy("127.0.0.1", vhost.node.host, vhost.node.port)
    await proxy.start()
    await proxy.cut()  # nothing answers where the ingress looks for the broker
    smtp_port = free_port()
    stack.env.update(world.env(smtp_listen=f"127.0.0.1:{smtp_port}"))
    stack.env["KUBEMTA_AMQP_URL"] = f"amqp://guest:guest@127.0.0.1:{proxy.port}/{vhost.name}"
    try:
        await stack.start(("ingress",), ready=False)
        assert (await stack.http("ingress", "/readyz"))[0] == 503
        assert await stack.metric("ingress", "kubemta_broker_connected", service="ingress") == 0
        outcome = await send(
            f"127.0.0.1:{smtp_port}", SENDER, ["a@mx.e2e.test"], make_message(SENDER, ["a@mx.e2e.test"], "no broker")
        )
        assert outcome.data is not None
        code, text = outcome.data
        assert code == 451 and text.startswith(b"4.3.0"), outcome.data
        assert await stack.metric("ingress", "kubemta_messages_rejected_total", reason="queue_unavailable") == 1
        assert await stack.metric("ingress", "kubemta_messages_received_total") == 0
    finally:
        await proxy.stop()


async def test_silent_broker_gives_451_and_mail_flows_again_after(stack: Stack, world: MailWorld, vhost: Vhost) -> None:
    proxy = TcpProxy("127.0.0.1", vhost.node.host, vhost.node.port)
    await proxy.start()
    smtp_port = free_port()
    server = f"127.0.0.1:{smtp_port}"
    stack.env.update(world.env(smtp_listen=server, publish_timeout="2s"))
    stack.env["KUBEMTA_AMQP_URL"] = f"amqp://guest:guest@127.0.0.1:{proxy.port}/{vhost.name}"
    try:
        await stack.start(("ingress",))
        proxy.blackhole()  # connected, but no confirm will ever come back
        outcome = await send(server, SENDER, ["a@mx.e2e.test"], make_message(SENDER, ["a@mx.e2e.test"], "silent"))
        assert outcome.data is not None and outcome.data[0] == 451, outcome.data
        await proxy.cut()
        await proxy.restore()

        async def accepted() -> bool:
            result = await send(server, SENDER, ["b@mx.e2e.test"], make_message(SENDER, ["b@mx.e2e.test"], "back"))
            return result.data is not None and result.data[0] == 250

        await eventually(accepted, within=30, what="the ingress to accept mail again after the broker came back")

        async def queued() -> bool:  # queue statistics lag a few seconds behind
            return (await asyncio.to_thread(vhost.queue_depths)).get("inbound", 0) >= 1

        await eventually(queued, within=20, what="the accepted message in `inbound`")
    finally:
        await proxy.stop()


async def test_mail_waits_in_the_queue_while_the_queue_manager_is_down(stack: Stack, world: MailWorld) -> None:
    smtp_port = free_port()
    server = f"127.0.0.1:{smtp_port}"
    stack.env.update(world.env(smtp_listen=server))
    await stack.start(("ingress", "dns-resolver", "delivery-worker"))
    mx1 = world.peer("mx1")
    await mx1.start()
    outcome = await send(server, SENDER, ["wait@mx.e2e.test"], make_message(SENDER, ["wait@mx.e2e.test"], "waits"))
    assert outcome.data is not None and outcome.data[0] == 250
    await asyncio.sleep(1.0)
    assert mx1.messages == []
    await stack.start(("queue-manager",))
    [delivered] = await mx1.wait_for_messages(1, timeout=20)
    assert delivered.rcpt_tos == ["wait@mx.e2e.test"]


async def test_killed_delivery_worker_loses_nothing(stack: Stack, world: MailWorld, vhost: Vhost) -> None:
    smtp_port = free_port()
    server = f"127.0.0.1:{smtp_port}"
    stack.env.update(world.env(smtp_listen=server, smtp_connect_timeout="60s", smtp_command_timeout="60s"))
    await stack.start()
    hung = world.peer("mx1", silent=True)  # accepts the connection and never answers
    await hung.start()
    await send(server, SENDER, ["crash@mx.e2e.test"], make_message(SENDER, ["crash@mx.e2e.test"], "crash"))

    async def worker_connected() -> bool:
        return hung.connections >= 1

    await eventually(worker_connected, what="the worker to connect to the hung MX")
    worker = stack.services["delivery-worker"].process
    worker.kill()  # SIGKILL mid-delivery: no result was published, the job was never acknowledged
    await asyncio.to_thread(worker.wait, 10)
    stack.services.pop("delivery-worker")
    await hung.stop()
    mx1 = world.peer("mx1")
    await mx1.start()
    await stack.start(("delivery-worker",))
    [delivered] = await mx1.wait_for_messages(1, timeout=30)
    assert delivered.rcpt_tos == ["crash@mx.e2e.test"]


async def test_swaks_gets_queued_reply_and_mail_is_delivered(mta: tuple[Stack, str], world: MailWorld) -> None:
    _, server = mta
    mx1 = world.peer("mx1")
    await mx1.start()
    result = await asyncio.to_thread(
        subprocess.run,
        [
            swaks(),
            "--server",
            server,
            "--from",
            SENDER,
            "--to",
            "swaks@mx.e2e.test",
            "--helo",
            "swaks.e2e.test",
            "--header",
            "Subject: swaks test",
            "--timeout",
            "30",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "<-  250 2.0.0 Ok: queued as " in result.stdout
    [delivered] = await mx1.wait_for_messages(1, timeout=20)
    assert b"Subject: swaks test" in delivered.content
