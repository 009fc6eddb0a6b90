"""A stand-in for `kubemta_common.amqp.publisher.Publisher` in unit tests.

Records what would have been confirmed. `error` makes every publish raise it; `hang_for`
makes a publish wait that long for a confirm that never comes and then fail, as the real
publisher's timeout does.
"""

import asyncio
from dataclasses import dataclass

from kubemta_common.errors import PublishFailed


@dataclass(frozen=True)
class Published:
    routing_key: str
    body: bytes
    message_id: str
    message_type: str


class FakePublisher:
    """Records confirmed publishes; fails on demand."""

    def __init__(self, error: Exception | None = None) -> None:
        self.published: list[Published] = []
        self.attempts = 0
        self.error = error
        self.hang_for: float | None = None

    async def publish(self, routing_key: str, body: bytes, *, message_id: str, message_type: str) -> None:
        self.attempts += 1
        if self.hang_for is not None:
            never = asyncio.Event()
            try:
                async with asyncio.timeout(self.hang_for):
                    await never.wait()
            except TimeoutError:
                raise PublishFailed(f"no confirm from the broker within {self.hang_for}s") from None
        if self.error is not None:
            raise self.error
        self.published.append(Published(routing_key, body, message_id, message_type))
