"""The bus topology: every exchange, queue and binding kubemta uses, declared in one place.

Every service declares the whole topology idempotently at start (and the robust
channel re-declares it after a reconnect). Queues are durable quorum queues.

- `inbound`: accepted messages (ingress, and DSNs from the queue-manager) -> queue-manager
- `route`: delivery jobs without a route -> dns-resolver
- `deliver`: routed jobs -> delivery-worker
- `results`: delivery results -> queue-manager
- `retry.<delay>`: one queue per retry delay, with that message TTL, dead-lettering
  back to `route` (tiered, so a short delay never waits behind a long one)
- `dsn`: DSN requests (queue-manager results handler) -> the queue-manager's DSN batcher, a single
  active consumer (`x-single-active-consumer`) so the requests of one message meet in one process
- `held`: messages a consumer rejected as unprocessable, or that were delivered to consumers
  `DELIVERY_LIMIT` times without being acknowledged (a poison message that crashes its
  consumer); kept for an operator, never dropped

Two lanes: every stage that carries a whole message (inbound, route, deliver, results and the
retry queues) has a twin `<name>.large` for bus messages over `LARGE_BODY` bytes; the publisher
picks the lane by size (`lane`), and every consumer reads both. RabbitMQ's prefetch counts
messages, not bytes, so one lane with a prefetch of 32 could hand a consumer 32 messages of
10 MB at once; the small lane keeps its prefetch (32 x 256 KiB at most), the large lane's
prefetch comes from the service's memory budget (memory.py). A `retry.<delay>.large` queue
dead-letters to `route.large`.

RabbitMQ versions (kubemta supports 3.10 and newer 3.x, and 4.x):
- the stage queues' `x-delivery-limit` counts returns on all of them, provided consumers
  return failed deliveries with `basic.reject` (consumer.py): since 4.3 `basic.nack` does
  not count;
- `held` has no consumer, but an operator's tools that get and requeue (or a consumer that
  dies holding its messages) return messages to it; since 4.0 a quorum queue drops a
  message after 20 returns when it has no dead-letter target, so on 4.x `held` is declared
  with `x-delivery-limit: -1` (no limit, RabbitMQ 4.0+ documented). On 3.x no limit is the
  default, and there -1 would drop a message on its first return, so 3.x gets no argument.
  A `held` declared otherwise before (e.g. on 3.x, then the broker was upgraded to 4.x)
  cannot be changed in place: the service logs an error saying how to fix it (a policy with
  `delivery-limit: -1`) and runs on.
"""

import logging
from collections.abc import Iterable

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange
from pamqp.common import FieldTable

from kubemta_common.config_types import format_duration

logger = logging.getLogger(__name__)

EXCHANGE = "kubemta"
INBOUND = "inbound"
ROUTE = "route"
DELIVER = "deliver"
RESULTS = "results"
DSN = "dsn"
HELD = "held"
CONTENT_STAGES: tuple[str, ...] = (INBOUND, ROUTE, DELIVER, RESULTS)
"""The stages whose messages carry a whole mail message, each with a large lane."""
LARGE_SUFFIX = ".large"
LARGE_BODY = 256 * 1024
"""Bus messages larger than this travel in the large lane of their stage."""
RETRY_PREFIX = "retry."


def large(name: str) -> str:
    """The large lane of a stage or retry queue."""
    return name + LARGE_SUFFIX


STAGE_QUEUES: tuple[str, ...] = (*CONTENT_STAGES, *(large(stage) for stage in CONTENT_STAGES))


def lane(routing_key: str, size: int) -> str:
    """The routing key a bus message of `size` bytes for `routing_key` goes to: its large lane when it is
    larger than LARGE_BODY and the key is a content stage or a retry queue, else the key itself."""
    if size <= LARGE_BODY or routing_key.endswith(LARGE_SUFFIX):
        return routing_key
    if routing_key in CONTENT_STAGES or routing_key.startswith(RETRY_PREFIX):
        return large(routing_key)
    return routing_key


UNLIMITED_DELIVERIES = -1
"""RabbitMQ 4.0+: `x-delivery-limit: -1` disables the limit (on 3.x it would drop at the first return)."""

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


def _retry_arguments(delay_seconds: float, target: str) -> FieldTable:
    return {
        "x-queue-type": "quorum",
        "x-message-ttl": int(delay_seconds * 1000),
        "x-dead-letter-exchange": EXCHANGE,
        "x-dead-letter-routing-key": target,
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }


def broker_major_version(server_version: str) -> int | None:
    """The major version of a RabbitMQ `version` server property (`3.10.8`, `4.1.0-rc.1`); None if unreadable."""
    head = server_version.strip().split(".", 1)[0]
    return int(head) if head.isascii() and head.isdigit() else None


def held_arguments(server_version: str) -> FieldTable:
    """The `held` queue's arguments for a broker of `server_version`: never drops a message (see above)."""
    arguments: FieldTable = {"x-queue-type": "quorum"}
    major = broker_major_version(server_version)
    if major is not None and major >= 4:
        arguments["x-delivery-limit"] = UNLIMITED_DELIVERIES
    return arguments


async def declare_topology(
    channel: AbstractChannel, retry_delays: Iterable[float], server_version: str = ""
) -> AbstractExchange:
    """Declare the exchange, `held` (for a broker of `server_version`), the stage queues and one delay
    queue per retry delay. A `held` that exists with other arguments fails this (PRECONDITION_FAILED);
    the services use `declare_stages` and `declare_held` instead, which tolerate it."""
    exchange = await declare_stages(channel, retry_delays)
    held = await channel.declare_queue(HELD, durable=True, arguments=held_arguments(server_version))
    await held.bind(exchange, routing_key=HELD)
    return exchange


async def declare_stages(channel: AbstractChannel, retry_delays: Iterable[float]) -> AbstractExchange:
    """Declare the exchange, the stage queues and one delay queue per retry delay (not `held`)."""
    exchange = await channel.declare_exchange(EXCHANGE, aio_pika.ExchangeType.DIRECT, durable=True)
    for name in STAGE_QUEUES:
        queue = await channel.declare_queue(name, durable=True, arguments=_quorum_arguments())
        await queue.bind(exchange, routing_key=name)
    dsn = await channel.declare_queue(
        DSN, durable=True, arguments={**_quorum_arguments(), "x-single-active-consumer": True}
    )
    await dsn.bind(exchange, routing_key=DSN)
    for delay in sorted(set(retry_delays)):
        for name, target in ((retry_queue_name(delay), ROUTE), (large(retry_queue_name(delay)), large(ROUTE))):
            queue = await channel.declare_queue(name, durable=True, arguments=_retry_arguments(delay, target))
            await queue.bind(exchange, routing_key=name)
    return exchange


async def declare_held(connection: AbstractConnection, server_version: str) -> bool:
    """Declare and bind `held` (declare_as_is); False when it exists with arguments other than this broker
    version's."""
    return await declare_as_is(
        connection,
        HELD,
        held_arguments(server_version),
        advice=(
            "on RabbitMQ 4.x it may drop a message after 20 returns. Fix: rabbitmqctl set_policy --apply-to "
            "quorum_queues kubemta-held '^held$' '{\"delivery-limit\": -1}' (4.x), or drain and delete the queue so "
            "it is declared anew"
        ),
    )


async def declare_as_is(
    connection: AbstractConnection, name: str, arguments: FieldTable, *, advice: str, kind: str = "queue"
) -> bool:
    """Declare `name` with `arguments` and bind it to the exchange under its name, on channels of its own; False
    when it exists with other arguments, which a declaration cannot change (a queue made by an older version, or
    on an older broker): an error with `advice` (what it means, how to change it) is logged and the queue is used
    as it is.

    Its own channels: a failed declaration closes its channel, and a robust channel would declare it
    again, and fail again, after every reconnect.
    """
    matches = True
    channel = await connection.channel(publisher_confirms=False)
    try:
        queue = await channel.declare_queue(name, durable=True, arguments=arguments)
    except aiormq.exceptions.ChannelPreconditionFailed as exc:
        matches = False
        logger.error("the %r %s exists with other arguments than %s (%s): %s", name, kind, dict(arguments), exc, advice)
        channel = await connection.channel(publisher_confirms=False)
        queue = await channel.declare_queue(name, passive=True)
    try:
        await queue.bind(EXCHANGE, routing_key=name)
    finally:
        await channel.close()
    return matches
