"""Messages per bus queue, asked from the broker (a passive declare per queue, on a channel of its own).

The summary's `broker` part: what the queues hold right now, beside what the events say. A
queue that does not exist closes its channel; the others are asked on a fresh one. Bounded:
whatever the broker did not answer within `timeout` is left out.
"""

import asyncio
import logging

import aiormq

from kubemta_common.amqp.broker import Broker
from kubemta_common.amqp.topology import DSN, HELD, STAGE_QUEUES, large, retry_queue_name

logger = logging.getLogger(__name__)


def bus_queues(retry_delays: list[float]) -> list[str]:
    """Every queue a summary reports: the stages with their large lanes, the retry queues, dsn and held."""
    retries = [retry_queue_name(delay) for delay in sorted(set(retry_delays))]
    return [*STAGE_QUEUES, *retries, *(large(name) for name in retries), DSN, HELD]


async def queue_depths(broker: Broker, names: list[str], *, within: float) -> dict[str, int]:
    """{queue: messages} for the `names` the broker answered for within `within` seconds."""
    depths: dict[str, int] = {}
    if not broker.connected:
        return depths
    try:
        async with asyncio.timeout(within):
            channel = await broker.consumer_channel(1)
            try:
                for name in names:
                    try:
                        queue = await channel.declare_queue(name, passive=True)
                    except aiormq.exceptions.ChannelClosed:
                        channel = await broker.consumer_channel(1)
                        continue
                    depths[name] = queue.declaration_result.message_count or 0
            finally:
                if not channel.is_closed:
                    await channel.close()
    except TimeoutError:
        logger.warning("the broker did not tell every queue's depth within %.1fs", within)
    except (aiormq.exceptions.AMQPError, ConnectionError, RuntimeError) as exc:
        logger.warning("could not ask the broker for queue depths: %r", exc)
    return depths
