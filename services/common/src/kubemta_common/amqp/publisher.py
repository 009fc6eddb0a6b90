"""Confirmed, mandatory, persistent publishing of typed stage messages (stages.py).

`BusPublisher` is what the services' handlers take (tests substitute a fake); `Publisher`
is the real one. A publish returns only after the broker confirmed it; anything else (not connected,
nack, returned as unroutable, channel closed, timeout) raises `PublishFailed`, so the
caller never acknowledges what is not safely queued.

Size: RabbitMQ refuses a message over its `max_message_size` (16 MiB by default on 4.x,
128 MiB on 3.x) by closing the channel it came on, which fails every other publish waiting
for a confirm there. So a body over `KUBEMTA_BROKER_MAX_MESSAGE_SIZE` is refused here
(`MessageTooLarge`, a permanent error) without being sent, and a large body
(over `ISOLATED_ABOVE`) travels on a channel of its own, opened for it and closed after it:
if the broker's real limit is lower than the setting, only that publish fails
(`MessageTooLarge` again), and the shared channel and every other session never notice.
"""

import asyncio
import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

import aio_pika
import aiormq
from google.protobuf.message import Message
from pamqp.commands import Basic

from kubemta_common.amqp.broker import Broker
from kubemta_common.amqp.stages import Outgoing, Stage
from kubemta_common.amqp.topology import EXCHANGE, lane
from kubemta_common.bus_messages import Encoded
from kubemta_common.errors import MessageTooLarge, PublishFailed

logger = logging.getLogger(__name__)

CONTENT_TYPE = "application/x-protobuf"
ISOLATED_ABOVE = 1024 * 1024
"""Bodies larger than this are published on a channel of their own (see the module docstring)."""
PERSISTENT = 2
"""AMQP delivery mode of a message the broker keeps on disk."""
_SIZE_REFUSAL = "message size"
"""In the reply text of the channel error RabbitMQ closes a channel with for an oversized message."""


def message_properties(
    *,
    message_id: str | None,
    message_type: str,
    headers: dict[str, str] | None = None,
    timestamp: datetime | None = None,
) -> Basic.Properties:
    """The AMQP properties of a persistent protobuf message: the same, byte for byte, as aio_pika.Message sent (an
    empty header table, priority 0). aiormq matches a basic.return to its publish by `message_id` (it makes one up
    when it is None)."""
    return Basic.Properties(
        content_type=CONTENT_TYPE,
        headers=dict(headers) if headers else {},
        delivery_mode=PERSISTENT,
        priority=0,
        timestamp=timestamp,
        message_id=message_id,
        message_type=message_type,
    )


async def publish_shared(broker: Broker, routing_key: str, body: bytes, properties: Basic.Properties) -> None:
    """Publish to the kubemta exchange, mandatory, on the broker's shared confirming channel, and wait for the
    confirm: straight to the aiormq channel under the robust one (no aio_pika.Message: a third of the publishing
    cost). Raises what aiormq raises (the callers map it); bound it with asyncio.timeout."""
    channel = await broker.publish_channel()
    await channel.basic_publish(
        body,
        exchange=EXCHANGE,
        routing_key=routing_key,
        properties=properties,
        mandatory=True,
        wait=False,  # the confirm is awaited: no need to wait for the socket write as well
    )


class BusPublisher(Protocol):
    """Publishes stage messages and returns only once the broker confirmed them.

    Raises `kubemta_common.errors.PublishFailed` otherwise (broker down, not yet connected, nack,
    unroutable, confirm timeout), and `MessageTooLarge` for a body the broker does not take.
    """

    async def publish[M: Message](self, stage: Stage[M], message: M | Encoded[M], *, message_id: str) -> None:
        """Publish one message of `stage` with publisher confirms."""

    async def publish_all(self, messages: Sequence[Outgoing]) -> None:
        """Publish several (`Stage.outgoing`), their confirms awaited together; raises if any one failed."""


class HeldPublisher(BusPublisher, Protocol):
    """A `BusPublisher` that also publishes raw bodies with AMQP headers: what a service needs to hold a job
    (kubemta_common.amqp.held: an admin-held job with its `x-kubemta-*` headers). `Publisher` is one."""

    async def publish_raw(
        self,
        routing_key: str,
        body: bytes,
        *,
        message_id: str,
        message_type: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Publish `body` to `routing_key` with AMQP `headers`, confirmed."""


class Publisher:
    """Publishes protobuf payloads to the kubemta exchange with publisher confirms (a `BusPublisher`)."""

    def __init__(self, broker: Broker, timeout: float, max_message_size: int | None = None) -> None:
        self._broker = broker
        self._timeout = timeout
        self._max_message_size = max_message_size
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def in_flight(self) -> int:
        """Publishes waiting for their confirm."""
        return self._in_flight

    async def wait_idle(self) -> None:
        """Wait until no publish is waiting for its confirm (bound it with asyncio.timeout)."""
        await self._idle.wait()

    async def publish[M: Message](self, stage: Stage[M], message: M | Encoded[M], *, message_id: str) -> None:
        """Publish one message of `stage` and wait for the broker's confirm (to its large lane when large)."""
        await self.send(stage.outgoing(message, message_id=message_id))

    async def send(self, outgoing: Outgoing) -> None:
        """Publish one `Stage.outgoing` message and wait for the broker's confirm."""
        await self._send(
            outgoing.routing_key, outgoing.body, message_id=outgoing.message_id, type_=outgoing.message_type
        )

    async def publish_raw(
        self,
        routing_key: str,
        body: bytes,
        *,
        message_id: str,
        message_type: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Publish bytes no stage checked (`held`: admin holds with their `x-kubemta-*` headers; releases back to
        a message's origin; the bus's own tests), to the large lane of `routing_key` when the body is large."""
        await self._send(lane(routing_key, len(body)), body, message_id=message_id, type_=message_type, headers=headers)

    async def _send(
        self, routing_key: str, body: bytes, *, message_id: str, type_: str, headers: dict[str, str] | None = None
    ) -> None:
        if self._max_message_size is not None and len(body) > self._max_message_size:
            raise MessageTooLarge(
                f"{len(body)} bytes is more than the broker takes (KUBEMTA_BROKER_MAX_MESSAGE_SIZE "
                f"{self._max_message_size})"
            )
        self._in_flight += 1
        self._idle.clear()
        try:
            await self._publish(routing_key, body, message_id=message_id, message_type=type_, headers=headers)
        finally:
            self._in_flight -= 1
            if not self._in_flight:
                self._idle.set()

    async def _publish(
        self, routing_key: str, body: bytes, *, message_id: str, message_type: str, headers: dict[str, str] | None
    ) -> None:
        if not self._broker.connected:
            raise PublishFailed("broker not connected")
        properties = message_properties(message_id=message_id, message_type=message_type, headers=headers)
        try:
            async with asyncio.timeout(self._timeout):
                if len(body) > ISOLATED_ABOVE:
                    async with self._broker.isolated_channel() as own:
                        await own.basic_publish(
                            body, exchange=EXCHANGE, routing_key=routing_key, properties=properties, mandatory=True
                        )
                else:
                    await publish_shared(self._broker, routing_key, body, properties)
        except aiormq.exceptions.ChannelPreconditionFailed as exc:
            if _SIZE_REFUSAL in str(exc):
                raise MessageTooLarge(f"the broker refused {len(body)} bytes: {exc}") from None
            raise PublishFailed(f"publish failed: {exc!r}") from None
        except TimeoutError:
            silent = f"no confirm from the broker within {self._timeout:.0f}s"
            raise PublishFailed(silent, maybe_published=True) from None
        except aio_pika.exceptions.PublishError:
            raise PublishFailed(f"unroutable: no queue bound for {routing_key!r}") from None
        except aio_pika.exceptions.DeliveryError as exc:
            raise PublishFailed(f"broker refused the message: {exc}") from None
        except (aiormq.exceptions.AMQPError, aio_pika.exceptions.AMQPError, ConnectionError, RuntimeError) as exc:
            raise PublishFailed(f"publish failed: {exc!r}", maybe_published=True) from None

    async def publish_all(self, messages: Sequence[Outgoing]) -> None:
        """Publish `Stage.outgoing` messages concurrently; confirms are awaited together.

        Raises PublishFailed if any one failed (some may have been queued: at-least-once).
        """
        results = await asyncio.gather(*(self.send(outgoing) for outgoing in messages), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                if isinstance(result, PublishFailed | MessageTooLarge):
                    raise result
                raise PublishFailed(f"publish failed: {result!r}") from result
