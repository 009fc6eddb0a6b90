"""How much message content a consumer service holds at once: prefetch by size, processing by bytes.

Every stage carries the message content (the queue-manager keeps no state; a job or a result is
the whole message), and RabbitMQ's prefetch counts messages, not bytes (it does not implement
`prefetch-size`). A consumer with the default prefetch of 32 could therefore hold 32 messages of
KUBEMTA_MAX_MESSAGE_SIZE, delivered and unacknowledged, plus the copies its handlers make of the
ones they are working on: 10 MB messages to 50 domains took the queue-manager to about 1 GB.
Two bounds keep a service within `KUBEMTA_CONSUMER_MEMORY`:

- `content_prefetch`: the consumers of content-carrying queues share the budget; each one's
  prefetch is lowered until its share holds that many messages of the largest size
  (KUBEMTA_AMQP_PREFETCH stays the upper bound, and small limits never go below 1);
- `ByteGate`: the handlers running at once hold at most half the budget in message bytes
  (a message larger than that runs alone), so the copies a handler makes (decoded, re-encoded,
  on the wire) stay bounded too. Small messages never wait for it.

So the memory of messages is at most about 2.5 times the budget, whatever arrives.
"""

import asyncio
import contextlib
from collections.abc import AsyncIterator

from kubemta_common.settings import BUS_HEADROOM


def content_prefetch(*, prefetch: int, budget: int, consumers: int, max_message_size: int) -> int:
    """The prefetch of each of `consumers` content-carrying consumers sharing `budget` bytes."""
    largest = max_message_size + BUS_HEADROOM
    fits = budget // max(1, consumers) // largest
    return max(1, min(prefetch, fits))


class ByteGate:
    """Bytes of messages whose handlers run at once, at most `capacity` (a larger message runs alone)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = max(1, capacity)
        self._used = 0
        self._freed = asyncio.Event()

    @property
    def used(self) -> int:
        """Bytes held by running handlers now."""
        return self._used

    @contextlib.asynccontextmanager
    async def hold(self, size: int) -> AsyncIterator[None]:
        """Wait until `size` bytes (at most the capacity) fit, hold them while the block runs."""
        weight = min(max(0, size), self.capacity)
        while self._used + weight > self.capacity:
            self._freed.clear()
            await self._freed.wait()
        self._used += weight
        try:
            yield
        finally:
            self._used -= weight  # no await here: a cancelled handler gives its bytes back too
            self._freed.set()
