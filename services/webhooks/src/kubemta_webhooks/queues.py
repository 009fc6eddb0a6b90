"""The webhooks service's queues, beside the pipeline's (kubemta_common.amqp.topology), on the kubemta exchange:

- `webhooks` (quorum): WebhookDelivery messages waiting to be sent; every replica consumes it. Like a stage
  queue, a message returned `DELIVERY_LIMIT` times (a sender crashing on it) dead-letters to `held`.
- `webhooks.retry.<delay>` (quorum, one per KUBEMTA_WEBHOOK_RETRY_TIERS delay): a failed webhook waits
  there for the queue's message TTL, then dead-letters back to `webhooks` (the pipeline's retry design:
  one TTL per queue, so a short delay never waits behind a long one).
- `webhooks.checkpoint` (quorum, `x-max-length: 1`, overflow drop-head): the latest WebhookCheckpoint;
  each new one pushes the previous out. On 4.x it has `x-delivery-limit: -1` like `held` (the leader
  reads it with basic.get and returns it; 4.x would otherwise drop it after 20 returns).
- `webhooks.leader` (classic, exclusive, not bound): the leader lock. It exists only while the
  connection that declared it lives; another replica's declaration fails with RESOURCE_LOCKED.
"""

from collections.abc import Iterable

from aio_pika.abc import AbstractChannel, AbstractConnection
from pamqp.common import FieldTable

from kubemta.v1 import webhooks_pb2
from kubemta_common.amqp.stages import Stage
from kubemta_common.amqp.topology import DELIVERY_LIMIT, EXCHANGE, HELD, declare_as_is, held_arguments
from kubemta_common.config_types import format_duration

WEBHOOKS = "webhooks"
CHECKPOINT = "webhooks.checkpoint"
LEADER = "webhooks.leader"
RETRY_PREFIX = "webhooks.retry."

SEND = Stage(WEBHOOKS, webhooks_pb2.WebhookDelivery, large_lane=False)
"""Webhooks to send -> every replica's sender."""


def retry_queue(delay: float) -> str:
    """The retry tier queue of one delay, e.g. `webhooks.retry.10s`."""
    return RETRY_PREFIX + format_duration(delay)


def retry_stage(delay: float) -> Stage[webhooks_pb2.WebhookDelivery]:
    """The retry tier of one delay: its messages dead-letter back to `webhooks` after `delay`."""
    return Stage(retry_queue(delay), webhooks_pb2.WebhookDelivery, large_lane=False)


def checkpoint_arguments(server_version: str) -> FieldTable:
    """`webhooks.checkpoint`: one message kept (the newest), never dropped for its returns."""
    return {**held_arguments(server_version), "x-max-length": 1, "x-overflow": "drop-head"}


def webhooks_arguments() -> FieldTable:
    """`webhooks`: a stage queue's arguments (topology.py): poison messages dead-letter to `held` at least once."""
    return {
        "x-queue-type": "quorum",
        "x-delivery-limit": DELIVERY_LIMIT,
        "x-dead-letter-exchange": EXCHANGE,
        "x-dead-letter-routing-key": HELD,
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }


def retry_arguments(delay: float) -> FieldTable:
    """A retry tier: quorum, the delay as message TTL, dead-lettering back to `webhooks` at least once."""
    return {
        "x-queue-type": "quorum",
        "x-message-ttl": int(delay * 1000),
        "x-dead-letter-exchange": EXCHANGE,
        "x-dead-letter-routing-key": WEBHOOKS,
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }


async def declare_send_queues(channel: AbstractChannel, tiers: Iterable[float]) -> None:
    """Declare and bind `webhooks` and its retry tiers (idempotent; the exchange exists: every service's Broker
    declares it)."""
    declarations: list[tuple[str, FieldTable]] = [
        (WEBHOOKS, webhooks_arguments()),
        *((retry_queue(delay), retry_arguments(delay)) for delay in sorted(set(tiers))),
    ]
    for name, arguments in declarations:
        queue = await channel.declare_queue(name, durable=True, arguments=arguments)
        await queue.bind(EXCHANGE, routing_key=name)


async def declare_checkpoint(connection: AbstractConnection, server_version: str) -> None:
    """Declare and bind `webhooks.checkpoint` on channels of its own; one that exists with other arguments (declared
    on 3.x, the broker upgraded to 4.x) is logged and used as it is (declare_as_is)."""
    await declare_as_is(
        connection,
        CHECKPOINT,
        checkpoint_arguments(server_version),
        advice=(
            "it is used as it is. On RabbitMQ 4.x: rabbitmqctl set_policy --apply-to quorum_queues "
            "kubemta-webhooks-checkpoint '^webhooks\\.checkpoint$' '{\"delivery-limit\": -1}'"
        ),
    )
