"""Consuming without aio-pika's restore: the caller consumes again itself.

A robust queue's `consume` registers the consumer for aio-pika to restore, with the same tag and arguments, after a
reconnect or a broker cancel. A stream reader would start again at its original offset, and after a cancel RabbitMQ
4.3.0-4.3.6 still holds the tag and closes the whole connection for it (consumer.py). The stream readers and the
stage consumers therefore consume with `robust=False` and consume again themselves.
"""

from collections.abc import Awaitable, Callable

from aio_pika.abc import AbstractIncomingMessage, AbstractQueue, AbstractRobustQueue
from pamqp.common import FieldTable


async def consume_unrestored(
    queue: AbstractQueue,
    callback: Callable[[AbstractIncomingMessage], Awaitable[None]],
    arguments: FieldTable | None = None,
) -> str:
    """`queue.consume(callback, arguments=arguments)`, which a robust queue does not register for its restore; the
    consumer tag."""
    if isinstance(queue, AbstractRobustQueue):
        return await queue.consume(callback, arguments=arguments, robust=False)
    return await queue.consume(callback, arguments=arguments)
