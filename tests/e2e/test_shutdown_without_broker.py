"""End to end: a service whose broker went away still stops on SIGTERM within its bounds and exits 0, instead of
waiting for a broker that does not come back until the kubelet's SIGKILL. Nothing is lost by it: what it had not
acknowledged returns to its queue with the connection.

- cut: the connection drops and every reconnect is refused (the broker is down);
- silent: the connection stays open but nothing comes back (a hung node, a black-holed network): every wait of the
  stop (the consumer's cancel, the last acknowledgements, the events, the connection's close) is bounded."""

import asyncio
import time

import pytest

from tests.e2e.conftest import MailWorld
from tests.harness.ports import free_port
from tests.harness.rabbitmq import Vhost
from tests.harness.stack import Stack
from tests.harness.tcp_proxy import TcpProxy

pytestmark = [pytest.mark.broker, pytest.mark.e2e]

CASES = [
    *((service, "cut") for service in ("ingress", "queue-manager", "dns-resolver", "delivery-worker")),
    ("ingress", "silent"),
    ("delivery-worker", "silent"),
]


async def break_the_broker(proxy: TcpProxy, fault: str) -> None:
    if fault == "cut":
        await proxy.cut()
        await asyncio.sleep(3)  # the service is reconnecting by now
    else:
        proxy.blackhole()


@pytest.mark.parametrize(("service", "fault"), CASES)
async def test_a_service_without_its_broker_stops_on_sigterm_and_exits_0(
    stack: Stack, world: MailWorld, vhost: Vhost, service: str, fault: str
) -> None:
    proxy = TcpProxy("127.0.0.1", vhost.node.host, vhost.node.port)
    await proxy.start()
    stack.env.update(world.env(smtp_listen=f"127.0.0.1:{free_port()}"))
    stack.env["KUBEMTA_AMQP_URL"] = f"amqp://guest:guest@127.0.0.1:{proxy.port}/{vhost.name}"
    try:
        await stack.start((service,))
        await break_the_broker(proxy, fault)
        started = time.monotonic()
        codes = await stack.stop(service)  # SIGTERM, then SIGKILL after 20 s
        took = time.monotonic() - started
    finally:
        await proxy.stop()
    assert codes == {service: 0}, f"{service} did not stop by itself in {took:.1f}s (exit {codes})"
