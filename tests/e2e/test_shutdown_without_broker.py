"""End to end: a service whose broker went away (the connection dropped, reconnects refused) still stops on
SIGTERM within its drain bounds and exits 0, instead of waiting for a broker that does not come back until the
kubelet's SIGKILL. Nothing is lost by it: what it had not acknowledged returns to its queue with the connection."""

import asyncio
import time

import pytest

from tests.e2e.conftest import MailWorld
from tests.harness.ports import free_port
from tests.harness.rabbitmq import Vhost
from tests.harness.stack import Stack
from tests.harness.tcp_proxy import TcpProxy

pytestmark = [pytest.mark.broker, pytest.mark.e2e]

SERVICES = ("ingress", "queue-manager", "dns-resolver", "delivery-worker")


@pytest.mark.parametrize("service", SERVICES)
async def test_a_service_without_its_broker_stops_on_sigterm_and_exits_0(
    stack: Stack, world: MailWorld, vhost: Vhost, service: str
) -> None:
    proxy = TcpProxy("127.0.0.1", vhost.node.host, vhost.node.port)
    await proxy.start()
    stack.env.update(world.env(smtp_listen=f"127.0.0.1:{free_port()}"))
    stack.env["KUBEMTA_AMQP_URL"] = f"amqp://guest:guest@127.0.0.1:{proxy.port}/{vhost.name}"
    try:
        await stack.start((service,))
        await proxy.cut()  # the broker is gone: the connection drops and every reconnect is refused
        await asyncio.sleep(3)  # reconnecting by now
        started = time.monotonic()
        codes = await stack.stop(service)
        took = time.monotonic() - started
    finally:
        await proxy.stop()
    assert codes == {service: 0}, f"{service} did not stop by itself in {took:.1f}s (exit {codes})"


@pytest.mark.parametrize("service", ("ingress", "delivery-worker"))
async def test_a_service_whose_broker_went_silent_stops_on_sigterm_and_exits_0(
    stack: Stack, world: MailWorld, vhost: Vhost, service: str
) -> None:
    """The connection stays open but nothing comes back (a hung node, a black-holed network): every wait of the
    stop (the consumer's cancel, the last acknowledgements, the events, the connection's close) is bounded."""
    proxy = TcpProxy("127.0.0.1", vhost.node.host, vhost.node.port)
    await proxy.start()
    stack.env.update(world.env(smtp_listen=f"127.0.0.1:{free_port()}"))
    stack.env["KUBEMTA_AMQP_URL"] = f"amqp://guest:guest@127.0.0.1:{proxy.port}/{vhost.name}"
    try:
        await stack.start((service,))
        proxy.blackhole()
        started = time.monotonic()
        codes = await stack.stop(service)
        took = time.monotonic() - started
    finally:
        await proxy.stop()
    assert codes == {service: 0}, f"{service} did not stop by itself in {took:.1f}s (exit {codes})"
