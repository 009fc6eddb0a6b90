"""Fixtures for the cross-service tests: this run's loopback network and the service stack (stopped by PID
after every test). The RabbitMQ node and the vhost per test come from tests/harness/broker_fixtures.py."""

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.harness.ports import random_loopback_net
from tests.harness.rabbitmq import Vhost
from tests.harness.stack import Stack


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
