"""A stand-in for `kubemta_common.amqp.publisher.Publisher` (a `HeldPublisher`, so a `BusPublisher`) in unit
tests.

Records what would have been confirmed, as the wire would carry it: the stage's queue (before the
large-lane choice), the serialised body, the message id and the AMQP `type`, in `published`; a raw
publish (`publish_raw`: an admin-held job) goes to `raw` instead, its AMQP headers kept. `error` makes every
publish raise it; `hang_for` makes a publish wait that long for a confirm that never comes and
then fail, as the real publisher's timeout does.
"""

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from google.protobuf.message import Message

from kubemta_common.amqp.stages import Outgoing, Stage
from kubemta_common.bus_messages import Encoded
from kubemta_common.errors import PublishFailed


@dataclass(frozen=True)
class Published:
    routing_key: str
    body: bytes
    message_id: str
    message_type: str
    headers: dict[str, str] | None = None
    """A raw publish's AMQP headers (None for a stage message)."""


class FakePublisher:
    """Records confirmed publishes; fails on demand."""

    def __init__(self, error: Exception | None = None) -> None:
        self.published: list[Published] = []
        self.raw: list[Published] = []
        self.attempts = 0
        self.error = error
        self.hang_for: float | None = None

    async def publish[M: Message](self, stage: Stage[M], message: M | Encoded[M], *, message_id: str) -> None:
        await self._send(stage.outgoing(message, message_id=message_id))

    async def publish_all(self, messages: Sequence[Outgoing]) -> None:
        for outgoing in messages:
            await self._send(outgoing)

    async def publish_raw(
        self,
        routing_key: str,
        body: bytes,
        *,
        message_id: str,
        message_type: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        await self._confirm()
        self.raw.append(Published(routing_key, body, message_id, message_type, dict(headers or {})))

    async def _send(self, outgoing: Outgoing) -> None:
        await self._confirm()
        self.published.append(
            Published(outgoing.stage.queue, outgoing.body, outgoing.message_id, outgoing.message_type)
        )

    async def _confirm(self) -> None:
        """Count the attempt; hang and fail, or fail, when told to."""
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
