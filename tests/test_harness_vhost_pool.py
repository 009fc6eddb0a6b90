"""The tests' vhost pool: vhosts made a batch at a time are each new, usable by guest, handed out once, and none is
left behind."""

import secrets

import aio_pika
import pytest

from tests.harness.rabbitmq import BrokerNode, VhostPool

pytestmark = pytest.mark.broker


async def test_a_pool_hands_out_new_usable_vhosts_and_leaves_none_behind(broker_node: BrokerNode) -> None:
    prefix = f"kubemta-pool-test-{secrets.token_hex(2)}"  # this run's: none left by another can be counted
    pool = VhostPool(broker_node, prefix=prefix, batch=2)
    taken = []
    try:
        taken = [pool.take() for _ in range(3)]  # two batches: the fourth vhost is made and not handed out
        assert len({vhost.name for vhost in taken}) == 3
        made = {name for name in broker_node.vhost_names() if name.startswith(f"{prefix}-")}
        assert len(made) == 4 and {vhost.name for vhost in taken} <= made
        for vhost in taken:
            connection = await aio_pika.connect(vhost.url, timeout=10)
            async with connection:
                channel = await connection.channel()
                queue = await channel.declare_queue("pool-check", durable=True)
                assert queue.declaration_result.message_count == 0  # nothing from another test
    finally:
        for vhost in taken:
            vhost.delete()
        pool.close()
    assert not {name for name in broker_node.vhost_names() if name.startswith(f"{prefix}-")}
