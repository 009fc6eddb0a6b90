"""A pytest plugin (loaded by the root conftest.py) with the broker fixtures every test shares: one RabbitMQ
node for the run, a vhost per test, and a started `Broker` on that vhost (streams declared with `RETENTION`).

A test module or conftest may still define a fixture of the same name; pytest then uses the nearer one."""

import asyncio
from collections.abc import AsyncIterator, Iterator

import aiormq
import pytest

from kubemta_common.amqp.broker import Broker
from kubemta_common.amqp.streams import StreamRetention
from tests.harness.rabbitmq import BrokerNode, Vhost, VhostPool, find_or_start_broker

RETENTION = StreamRetention(events_max_age=3600, events_max_bytes=64 * 1024 * 1024, decisions_max_age=3600)
"""Stream retention of the test brokers: an hour and 64 MiB for events, an hour for decisions."""


async def started_broker(url: str, *, name: str = "test") -> Broker:
    """A Broker on `url` (quick reconnects, streams declared with RETENTION), connected within 20 s."""
    broker = Broker(url, name=name, retry_delays=(1.0,), reconnect_interval=0.2, retention=RETENTION)
    async with asyncio.timeout(20):
        await broker.run()
    return broker


@pytest.fixture(scope="session")
def broker_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerNode]:
    node = find_or_start_broker(tmp_path_factory.mktemp("rabbitmq"))
    try:
        yield node
    finally:
        node.shutdown()


@pytest.fixture(scope="session")
def vhost_pool(broker_node: BrokerNode) -> Iterator[VhostPool]:
    pool = VhostPool(broker_node)
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture
def vhost(vhost_pool: VhostPool) -> Iterator[Vhost]:
    vhost = vhost_pool.take()
    try:
        yield vhost
    finally:
        vhost.delete()


@pytest.fixture
async def broker(vhost: Vhost) -> AsyncIterator[Broker]:
    broker = await started_broker(vhost.url)
    try:
        yield broker
    finally:
        await broker.close()


def record_acks(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, bool]]:
    """Every basic.ack sent on any aiormq channel while the test runs, as (delivery tag, multiple)."""
    acks: list[tuple[int, bool]] = []
    basic_ack = aiormq.Channel.basic_ack

    async def record_ack(self: aiormq.Channel, delivery_tag: int, multiple: bool = False, wait: bool = True) -> None:
        acks.append((delivery_tag, multiple))
        await basic_ack(self, delivery_tag, multiple=multiple, wait=wait)

    monkeypatch.setattr(aiormq.Channel, "basic_ack", record_ack)
    return acks


BROKER_FIXTURES = frozenset({"broker_node", "vhost_pool", "vhost", "broker"})
"""The fixtures above: a test that uses one (directly or through another fixture) needs a RabbitMQ."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Refuse a test that uses a broker fixture without the `broker` or `e2e` marker: `-m "not broker and not
    e2e"` (`make test-unit`, and `make mutate`, whose staged copy has no broker fixtures) would run it anyway."""
    unmarked = [
        item.nodeid
        for item in items
        if BROKER_FIXTURES.intersection(getattr(item, "fixturenames", ()))
        and item.get_closest_marker("broker") is None
        and item.get_closest_marker("e2e") is None
    ]
    if unmarked:
        raise pytest.UsageError(f"tests using a broker fixture without the broker or e2e marker: {unmarked}")
