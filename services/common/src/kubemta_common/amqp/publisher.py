"""Confirmed, mandatory, persistent publishing.

A publish returns only after the broker confirmed it; anything else (not connected,
nack, returned as unroutable, channel closed, timeout) raises `PublishFailed`, so the
caller never acknowledges what is not safely queued.
"""

import asyncio
import logging
from collections.abc import Sequence

import aio_pika
import aiormq
from aio_pika.abc import DeliveryMode

from kubemta_common.amqp.broker import Broker
from kubemta_common.errors import PublishFailed

logger = logging.getLogger(__name__)

CONTENT_TYPE = "application/x-protobuf"


class Publisher:
    """Publishes protobuf payloads to the kubemta exchange with publisher confirms."""

    def __init__(self, broker: Broker, timeout: float) -> None:
        self._broker = broker
        self._timeout = timeout

    async def publish(self, routing_key: str, body: bytes, *, message_id: str, message_type: str) -> None:
        """Publish one message and wait for the broker's confirm."""
        exchange = self._broker.exchange
        if exchange is None:
            raise PublishFailed("broker not connected")
        message = aio_pika.Message(
            body,
            delivery_mode=DeliveryMode.PERSISTENT,
            content_type=CONTENT_TYPE,
            message_id=message_id,
            type=message_type,
        )
        try:
            async with asyncio.timeout(self._timeout):
                await exchange.publish(message, routing_key, mandatory=True)
        except TimeoutError:
            raise PublishFailed(f"no confirm from the broker within {self._timeout:.0f}s") from None
        except aio_pika.exceptions.PublishError:
            raise PublishFailed(f"unroutable: no queue bound for {routing_key!r}") from None
        except aio_pika.exceptions.DeliveryError as exc:
            raise PublishFailed(f"broker refused the message: {exc}") from None
        except (aiormq.exceptions.AMQPError, aio_pika.exceptions.AMQPError, ConnectionError, RuntimeError) as exc:
            raise PublishFailed(f"publish failed: {exc!r}") from None

    async def publish_all(self, messages: Sequence[tuple[str, bytes, str, str]]) -> None:
        """Publish (routing_key, body, message_id, type) tuples concurrently; confirms are awaited together.

        Raises PublishFailed if any one failed (some may have been queued: at-least-once).
        """
        results = await asyncio.gather(
            *(self.publish(key, body, message_id=mid, message_type=kind) for key, body, mid, kind in messages),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, BaseException):
                if isinstance(result, PublishFailed):
                    raise result
                raise PublishFailed(f"publish failed: {result!r}") from result
