"""Acknowledging a consumer's deliveries in batches: one `basic.ack(multiple=True)` for many deliveries.

The consumer (consumer.py) tells an `AckBatcher` about every delivery as it arrives (`delivered`), and
how it ended: acknowledged because its handler returned (`ack`), or settled otherwise (`settled`: the
consumer rejected it itself, or the handler acknowledged it on its own). An acknowledgement is not sent
at once: at the end of the event-loop turn (in one task, started by the turn's first acknowledgement),
every delivery acknowledged since the last flush is sent, as

- one `basic.ack(multiple=True)` for the highest acknowledged tag below the lowest delivery on that
  channel still unfinished: every delivery up to that tag is finished, so the broker settles exactly
  the ones acknowledged here (rejected ones it settled already: their frames went out first, on the
  same connection, in order);
- one `basic.ack` each for acknowledged deliveries above an unfinished one, so a slow handler never
  holds its neighbours' acknowledgements (nor their prefetch slots) for longer than one turn.

A delivery that is never finished (the consumer is stopping and leaves it to the broker, or its handler
was cancelled) stays unfinished: no multiple acknowledgement ever passes it.

Delivery tags are per channel: the batcher keeps one record per aiormq channel (the one the delivery
came on; a robust channel gets a new one after a reconnect) and never acknowledges on another one. A
channel found closed when flushing is forgotten: its tags are void, the broker returns its deliveries.
`flush` sends everything pending and waits until it is written (what a stopping consumer calls).
"""

import asyncio
import logging

import aiormq
from aiormq.abc import AbstractChannel

logger = logging.getLogger(__name__)


class _ChannelAcks:
    """What is pending on one channel: deliveries not finished yet (in tag order), and acknowledged ones."""

    __slots__ = ("acked", "unfinished")

    def __init__(self) -> None:
        self.unfinished: dict[int, None] = {}
        """Tags delivered and not finished, in delivery (= ascending tag) order."""
        self.acked: list[int] = []
        """Tags acknowledged since the last flush."""

    def frames(self) -> list[tuple[int, bool]]:
        """(tag, multiple) of the basic.ack frames that acknowledge `acked`; clears it."""
        acked, self.acked = self.acked, []
        lowest = next(iter(self.unfinished), None)
        if lowest is None:
            return [(max(acked), True)]
        below = [tag for tag in acked if tag < lowest]
        frames = [(max(below), True)] if below else []
        frames.extend((tag, False) for tag in acked if tag > lowest)
        return frames


class AckBatcher:
    """Batches one consumer's acknowledgements per channel and event-loop turn (see the module docstring)."""

    def __init__(self) -> None:
        self._channels: dict[AbstractChannel, _ChannelAcks] = {}
        self._scheduled = False
        self._lock = asyncio.Lock()
        """One flush at a time: a multiple ack must not overtake a single one it would cover."""
        self._flushes: set[asyncio.Task[None]] = set()

    def delivered(self, channel: AbstractChannel, tag: int) -> None:
        """A delivery arrived (call it in delivery order, before anything may finish it)."""
        acks = self._channels.get(channel)
        if acks is None:
            acks = self._channels[channel] = _ChannelAcks()
        acks.unfinished[tag] = None

    def settled(self, channel: AbstractChannel, tag: int) -> None:
        """A delivery was finished without this batcher (rejected, or acknowledged by its handler): the frame
        that did it was already handed to the connection."""
        acks = self._channels.get(channel)
        if acks is not None:
            acks.unfinished.pop(tag, None)

    def ack(self, channel: AbstractChannel, tag: int) -> None:
        """Acknowledge a delivery whose handler returned: sent at the end of this event-loop turn."""
        acks = self._channels.get(channel)
        if acks is None or tag not in acks.unfinished:
            return  # not a delivery of a channel we know (forgotten as closed): nothing to acknowledge
        del acks.unfinished[tag]
        acks.acked.append(tag)
        if not self._scheduled:
            self._scheduled = True
            task = asyncio.get_running_loop().create_task(self._flush_soon())
            self._flushes.add(task)
            task.add_done_callback(self._flushes.discard)

    @property
    def pending(self) -> int:
        """Acknowledgements not yet handed to the connection."""
        return sum(len(acks.acked) for acks in self._channels.values())

    async def _flush_soon(self) -> None:
        async with self._lock:
            self._scheduled = False
            await self._send(wait=False)

    async def flush(self) -> None:
        """Send every pending acknowledgement and wait until it was written to the connection."""
        async with self._lock:
            await self._send(wait=True)

    async def _send(self, *, wait: bool) -> None:
        for channel, acks in list(self._channels.items()):
            if channel.is_closed:
                if acks.acked:
                    logger.warning("channel closed: %d acknowledgements void, the broker redelivers", len(acks.acked))
                del self._channels[channel]
                continue
            if not acks.acked:
                continue
            try:
                for tag, multiple in acks.frames():
                    await channel.basic_ack(tag, multiple=multiple, wait=wait)
            except (aiormq.exceptions.AMQPError, ConnectionError, RuntimeError) as exc:
                logger.warning("could not acknowledge on a closing channel (the broker redelivers): %r", exc)
                self._channels.pop(channel, None)
