"""The reader's checkpoint: where the next leader resumes reading the `events` stream.

It lives in the quorum queue `webhooks.checkpoint` (queues.py), which keeps one message: each new
WebhookCheckpoint pushes the previous one out (x-max-length 1, drop-head), so writing is one
confirmed publish and nothing is ever deleted by hand. Reading is a basic.get with manual
acknowledgement followed by a requeue (basic.reject, requeue=True): the checkpoint stays in the queue
for whoever reads it next, and a reader that dies holding it returns it too.

A checkpoint says "every fate event before `next_offset` was turned into confirmed webhooks", so it
is written only after the webhooks of the records before it were confirmed (reader.py): a crash
re-reads from the last one (duplicates, never a loss). Before the first leader handled anything it
holds a time instead (`since`): the very first leader writes "now" (less FIRST_START_MARGIN) before
reading, so events written while it starts are not skipped by a second leader that takes over before
it wrote an offset.
"""

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, DeliveryMode
from google.protobuf.message import DecodeError

from kubemta.v1 import webhooks_pb2
from kubemta_common.timestamps import now_timestamp, to_datetime
from kubemta_webhooks.queues import CHECKPOINT

logger = logging.getLogger(__name__)

CHECKPOINT_TYPE = webhooks_pb2.WebhookCheckpoint.DESCRIPTOR.full_name


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """Where to resume: the next offset, or (before any was handled) the first chunk at or after `since`."""

    next_offset: int | None
    since: datetime | None

    @property
    def start(self) -> int | datetime:
        """The `x-stream-offset` to consume from."""
        if self.next_offset is not None:
            return self.next_offset
        assert self.since is not None
        return self.since


def encode(checkpoint: Checkpoint) -> bytes:
    """The WebhookCheckpoint body of a checkpoint."""
    message = webhooks_pb2.WebhookCheckpoint(written=now_timestamp())
    if checkpoint.next_offset is not None:
        message.next_offset = checkpoint.next_offset
    if checkpoint.since is not None:
        message.since.FromDatetime(checkpoint.since)
    return message.SerializeToString()


def decode(body: bytes) -> Checkpoint | None:
    """The checkpoint in a body, or None when it holds none."""
    try:
        message = webhooks_pb2.WebhookCheckpoint.FromString(body)
    except DecodeError:
        return None
    if message.HasField("next_offset"):
        return Checkpoint(message.next_offset, None)
    if message.HasField("since"):
        return Checkpoint(None, to_datetime(message.since))
    return None


async def read_checkpoint(channel: AbstractChannel) -> Checkpoint | None:
    """The latest checkpoint, left in the queue; None when there is none (the first leader ever)."""
    queue = await channel.get_queue(CHECKPOINT, ensure=False)
    message = await queue.get(no_ack=False, fail=False, timeout=10)
    if message is None:
        return None
    try:
        checkpoint = decode(message.body)
    finally:
        await message.reject(requeue=True)
    if checkpoint is None:
        logger.error("the %s queue holds no readable checkpoint: reading the stream from now", CHECKPOINT)
    return checkpoint


async def write_checkpoint(exchange: AbstractExchange, checkpoint: Checkpoint, *, within: float) -> None:
    """Publish a checkpoint and wait for the broker's confirm (raises when it was not confirmed)."""
    message = aio_pika.Message(
        encode(checkpoint),
        delivery_mode=DeliveryMode.PERSISTENT,
        content_type="application/x-protobuf",
        type=CHECKPOINT_TYPE,
    )
    async with asyncio.timeout(within):
        await exchange.publish(message, CHECKPOINT, mandatory=True)


FIRST_START_MARGIN = 60.0
"""Seconds before "now" the very first leader starts at: a timestamp offset attaches to a stream chunk, and a
chunk begun before the time may hold events written after it (duplicates are allowed, losses are not)."""


def first_checkpoint(now: datetime | None = None) -> Checkpoint:
    """The checkpoint of the very first leader: the stream from (just before) now on, in whole seconds (the AMQP
    timestamp the stream consumer takes)."""
    moment = (now or datetime.now(UTC)) - timedelta(seconds=FIRST_START_MARGIN)
    return Checkpoint(None, moment.replace(microsecond=0))
