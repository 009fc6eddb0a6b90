"""Queue depths of a vhost, read over AMQP (a passive queue.declare each), cheap enough to poll every 0.1 s.

`rabbitmqctl list_queues` starts an Erlang VM each time (about a CPU second): polled during a
measurement it would take the CPU the measured stage needs. A passive declare costs the broker
next to nothing and answers the queue's ready messages (not those delivered and unacknowledged);
a queue that does not exist counts 0 (the passive declare closes the channel: a new one is opened).
"""

from collections.abc import Iterable

import aiormq
from aiormq.abc import AbstractChannel, AbstractConnection


class BusDepths:
    """One connection to a vhost for reading the ready messages of its queues."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None

    async def __aenter__(self) -> "BusDepths":
        self._connection = await aiormq.connect(self._url)
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._connection is not None:
            await self._connection.close()
            self._connection = None

    async def _open_channel(self) -> AbstractChannel:
        if self._connection is None:
            raise RuntimeError("BusDepths used outside `async with`")
        if self._channel is None or self._channel.is_closed:
            self._channel = await self._connection.channel()
        return self._channel

    async def ready(self, queue: str) -> int:
        """Messages ready in `queue`; 0 when it does not exist."""
        channel = await self._open_channel()
        try:
            declared = await channel.queue_declare(queue, passive=True)
        except aiormq.exceptions.ChannelNotFoundEntity:
            self._channel = None
            return 0
        return int(declared.message_count or 0)

    async def total(self, queues: Iterable[str]) -> int:
        """The ready messages of several queues together."""
        return sum([await self.ready(queue) for queue in queues])
