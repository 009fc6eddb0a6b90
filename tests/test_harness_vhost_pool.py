"""The tests' vhost pool: vhosts made a batch at a time are each new, usable by guest, handed out once, and none is
left behind."""

import aio_pika
import pytest

from tests.harness.rabbitmq import BrokerNode, VhostPool

pytestmark = pytest.mark.broker


def vhost_names(node: BrokerNode) -> set[str]:
    return set(node.ctl("list_vhosts", "--quiet", "--no-table-headers").split())


async def test_a_pool_hands_out_new_usable_vhosts_and_leaves_none_behind(broker_node: BrokerNode) -> None:
    pool = VhostPool(broker_node, prefix="kubemta-pool-test", batch=2)
    taken = []
    try:
        taken = [pool.take() for _ in range(3)]  # two batches: the fourth vhost is made and not handed out
        assert len({vhost.name for vhost in taken}) == 3
        made = {name for name in vhost_names(broker_node) if name.startswith("kubemta-pool-test-")}
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
    assert not {name for name in vhost_names(broker_node) if name.startswith("kubemta-pool-test-")}


def pool_vhosts(node: BrokerNode, prefix: str) -> set[str]:
    return {name for name in vhost_names(node) if name.startswith(f"{prefix}-")}


def test_vhosts_given_back_are_deleted_a_batch_at_a_time_and_by_close(broker_node: BrokerNode) -> None:
    prefix = "kubemta-pool-giveback"
    pool = VhostPool(broker_node, prefix=prefix, batch=2)
    try:
        first, second, third = (pool.take() for _ in range(3))  # two batches made: four vhosts
        pool.give_back(first)
        assert first.name in pool_vhosts(broker_node, prefix)  # kept until the batch is full
        pool.give_back(second)
        left = pool_vhosts(broker_node, prefix)
        assert first.name not in left and second.name not in left  # one batch deleted
        assert third.name in left and len(left) == 2  # the one handed out, the one never handed out
        pool.give_back(third)
    finally:
        pool.close()
    assert not pool_vhosts(broker_node, prefix)


def test_deleting_vhosts_takes_one_call_and_a_vhost_already_gone_is_no_error(broker_node: BrokerNode) -> None:
    prefix = "kubemta-delete-test"
    made = [broker_node.create_vhost(prefix) for _ in range(2)]
    made[0].delete()
    broker_node.delete_vhosts([vhost.name for vhost in made])
    assert not pool_vhosts(broker_node, prefix)
    broker_node.delete_vhosts([])  # nothing to do, no rabbitmqctl run


@pytest.mark.parametrize("name", ['x">>]], init:stop(), [<<"y', "a b", "", "x" * 201, "é", "a\nb"])
def test_a_name_the_harness_did_not_make_is_refused_before_it_reaches_an_erlang_expression(
    broker_node: BrokerNode, name: str
) -> None:
    with pytest.raises(ValueError, match="not a vhost name"):
        broker_node.delete_vhosts(["kubemta-test-ok", name])
