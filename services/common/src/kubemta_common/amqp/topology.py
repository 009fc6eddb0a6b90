"""The bus topology: every exchange, queue and binding kubemta uses, declared in one place.

Every service declares the whole topology idempotently at start (and the robust
channel re-declares it after a reconnect). Queues are durable quorum queues.

- `inbound`: accepted messages (ingress, and DSNs from the queue-manager) -> queue-manager
- `route`: delivery jobs without a route -> dns-resolver
- `deliver`: routed jobs -> delivery-worker
- `results`: delivery results -> queue-manager
- `retry.<delay>`: one queue per retry delay, with that message TTL, dead-lettering
  back to `route` (tiered, so a short delay never waits behind a long one)
- `held`: messages a consumer rejected as unprocessable, or that were delivered to consumers
  `DELIVERY_LIMIT` times without being acknowledged (a poison message that crashes its
  consumer); kept for an operator, never dropped
"""

from collections.abc import Iterable

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange
from pamqp.common import FieldTable

from kubemta_common.config_types import format_duration

EXCHANGE = "kubemta"
INBOUND = "inbound"
ROUTE = "route"
DELIVER = "deliver"
RESULTS = "results"
HELD = "held"
STAGE_QUEUES: tuple[str, ...] = (INBOUND, ROUTE, DELIVER, RESULTS)

DELIVERY_LIMIT = 10
"""Deliveries of one message before a stage queue dead-letters it to `held` (quorum queue
`x-delivery-limit`). Every return counts (a crash, a requeue after a failed publish, a drain),
so it is well above what ordinary trouble causes. Queue arguments cannot change in place: a
stage queue declared without it makes the declaration fail (PRECONDITION_FAILED) until the
queue is drained and deleted."""


def retry_queue_name(delay_seconds: float) -> str:
    """The name (and routing key) of the delay queue for one retry delay, e.g. `retry.5m`."""
    return f"retry.{format_duration(delay_seconds)}"


def _quorum_arguments() -> FieldTable:
    # Rejected (unprocessable) messages dead-letter to `held`, at least once: the
    # at-least-once strategy needs overflow=reject-publish (RabbitMQ quorum queue docs).
    return {
        "x-queue-type": "quorum",
        "x-delivery-limit": DELIVERY_LIMIT,
        "x-dead-letter-exchange": EXCHANGE,
        "x-dead-letter-routing-key": HELD,
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }


def _retry_arguments(delay_seconds: float) -> FieldTable:
    return {
        "x-queue-type": "quorum",
        "x-message-ttl": int(delay_seconds * 1000),
        "x-dead-letter-exchange": EXCHANGE,
        "x-dead-letter-routing-key": ROUTE,
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }


async def declare_topology(channel: AbstractChannel, retry_delays: Iterable[float]) -> AbstractExchange:
    """Declare the exchange, the stage queues, `held` and one delay queue per retry delay."""
    exchange = await channel.declare_exchange(EXCHANGE, aio_pika.ExchangeType.DIRECT, durable=True)
    held = await channel.declare_queue(HELD, durable=True, arguments={"x-queue-type": "quorum"})
    await held.bind(exchange, routing_key=HELD)
    for name in STAGE_QUEUES:
        queue = await channel.declare_queue(name, durable=True, arguments=_quorum_arguments())
        await queue.bind(exchange, routing_key=name)
    for delay in sorted(set(retry_delays)):
        name = retry_queue_name(delay)
        queue = await channel.declare_queue(name, durable=True, arguments=_retry_arguments(delay))
        await queue.bind(exchange, routing_key=name)
    return exchange
