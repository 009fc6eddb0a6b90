"""Reading a queue of a test vhost directly, for assertions about what the services published."""

import asyncio

import aio_pika
import aio_pika.abc


async def first_message(url: str, queue: str, within: float = 10.0) -> aio_pika.abc.AbstractIncomingMessage:
    """The next message of `queue` (taken, not requeued), waiting at most `within` seconds."""
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        q = await channel.get_queue(queue)
        async with asyncio.timeout(within):
            while True:
                message = await q.get(fail=False, no_ack=True)
                if message is not None:
                    return message
                await asyncio.sleep(0.05)
    finally:
        await connection.close()


async def take_all(url: str, queue: str, within: float = 10.0) -> list[bytes]:
    """The bodies of every message on `queue` now (taken, not requeued), in queue order; the reading is bounded
    by `within` seconds. For messages whose publish was confirmed before the call (nothing waits for more)."""
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        q = await channel.get_queue(queue)
        taken = []
        async with asyncio.timeout(within):
            while (message := await q.get(fail=False, no_ack=True)) is not None:
                taken.append(message.body)
        return taken
    finally:
        await connection.close()
