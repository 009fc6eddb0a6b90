"""Fixtures for the cross-service tests: a RabbitMQ node and a vhost per test, this run's
loopback network, and the service stack (stopped by PID after every test)."""

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.harness.ports import random_loopback_net
from tests.harness.rabbitmq import BrokerNode, Vhost, find_or_start_broker
from tests.harness.stack import Stack


@pytest.fixture(scope="session")
def broker_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerNode]:
    node = find_or_start_broker(tmp_path_factory.mktemp("rabbitmq"))
    try:
        yield node
    finally:
        node.shutdown()


@pytest.fixture
def vhost(broker_node: BrokerNode) -> Iterator[Vhost]:
    vhost = broker_node.create_vhost()
    try:
        yield vhost
    finally:
        vhost.delete()


@pytest.fixture(scope="session")
def loopback_net() -> str:
    """This run's `127.a.b` prefix: test peers and servers live on its addresses."""
    return random_loopback_net()


@pytest.fixture
async def stack(tmp_path: Path, vhost: Vhost) -> AsyncIterator[Stack]:
    stack = Stack(tmp_path, {"KUBEMTA_AMQP_URL": vhost.url})
    try:
        yield stack
    finally:
        await stack.stop()
