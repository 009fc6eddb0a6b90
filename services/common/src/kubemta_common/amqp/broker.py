"""The service's connection to RabbitMQ.

`connect_robust` restores channels, topology and consumers after a reconnect, but it
does not retry the first connection; `Broker.run` does, so a service starts (and
reports not-ready) while the broker is still unreachable.

`connect_robust` also drops the keyword arguments aio-pika does not know, aiormq's `transport_factory`
among them, so `connect` builds the `RobustConnection` as `connect_robust` does and puts the factory into
the connection's `kwargs`, which every reconnect reuses: each connection's frames go out in one socket
write per loop turn (coalescing.py).
"""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterable

import aio_pika
import aiormq
import aiormq.abc
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractRobustConnection
from aio_pika.connection import make_url

from kubemta_common.amqp.coalescing import CoalescingTransportFactory
from kubemta_common.amqp.streams import StreamRetention, declare_streams
from kubemta_common.amqp.topology import declare_held, declare_stages

logger = logging.getLogger(__name__)


async def connect(url: str, *, name: str, reconnect_interval: float) -> AbstractRobustConnection:
    """What `aio_pika.connect_robust(url, client_properties={"connection_name": name}, reconnect_interval=...)`
    does, with aiormq's writes coalesced (the module docstring); reconnects use the same factory."""
    connection = aio_pika.RobustConnection(
        make_url(url, reconnect_interval=reconnect_interval),
        client_properties={"connection_name": name},
        reconnect_interval=reconnect_interval,
    )
    connection.kwargs["transport_factory"] = CoalescingTransportFactory()
    try:
        await connection.connect()
    except BaseException:
        # A failed or cancelled first attempt leaves the robust connection's reconnection task behind, and that task
        # swallows cancellation until the connection is closed: a service stopped while connecting never finished.
        await _abandon(connection)
        raise
    return connection


async def _abandon(connection: AbstractRobustConnection) -> None:
    """Close a connection that never came up (stops its reconnection task), within a bound, never raising."""
    try:
        async with asyncio.timeout(5):
            await connection.close()
    except Exception as exc:  # closing what never connected: nothing to keep
        logger.debug("closing an unconnected broker connection: %r", exc)


def server_version(connection: AbstractRobustConnection) -> str:
    """The broker's `version` server property (e.g. `3.10.8`), or "" when it did not say."""
    properties = getattr(getattr(connection.transport, "connection", None), "server_properties", None) or {}
    version = properties.get("version", "")
    if isinstance(version, bytes):
        version = version.decode("ascii", "replace")
    return version if isinstance(version, str) else ""


class Broker:
    """A robust connection, a confirming publish channel and the declared topology (with the streams when
    `retention` is given: streams.py)."""

    def __init__(
        self,
        url: str,
        *,
        name: str,
        retry_delays: Iterable[float],
        reconnect_interval: float,
        retention: StreamRetention | None = None,
    ) -> None:
        self._url = url
        self._retention = retention
        self._name = name
        self._retry_delays = tuple(retry_delays)
        self._reconnect_interval = reconnect_interval
        self._connection: AbstractRobustConnection | None = None
        self._publish_channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None
        self._raw_publish: aiormq.Channel | None = None
        self._ready = asyncio.Event()
        self._closed = False

    @property
    def connected(self) -> bool:
        """True while the connection to the broker is up."""
        connection = self._connection
        return connection is not None and not connection.is_closed and connection.connected.is_set()

    @property
    def closed(self) -> bool:
        """True once `close()` was called: the service is stopping, nobody should consume again."""
        return self._closed

    @property
    def exchange(self) -> AbstractExchange | None:
        """The kubemta exchange on the publish channel, once connected."""
        return self._exchange if self.connected else None

    async def publish_channel(self) -> aiormq.Channel:
        """The aiormq channel under the confirming publish channel (publisher.py publishes on it directly); the
        robust channel puts a new one under itself after a reconnect. Raises ConnectionError when not connected,
        ChannelInvalidStateError while the channel is being reopened."""
        raw = self._raw_publish
        if raw is None or raw.is_closed:
            channel = self._publish_channel
            if channel is None or not self.connected:
                raise ConnectionError("broker not connected")
            underlay = await channel.get_underlay_channel()
            assert isinstance(underlay, aiormq.Channel)  # (its basic_publish takes `wait`; the abstract one does not)
            if underlay.is_closed:  # a channel error closed it; the robust channel is opening another one
                raise aiormq.exceptions.ChannelInvalidStateError("publish channel closed")
            raw = self._raw_publish = underlay
        return raw

    async def wait_ready(self) -> None:
        """Wait until the first connection and topology declaration succeeded."""
        await self._ready.wait()

    async def run(self) -> None:
        """Connect, retrying until it works, then declare the topology."""
        while self._connection is None:
            try:
                connection = await connect(self._url, name=self._name, reconnect_interval=self._reconnect_interval)
            except (TimeoutError, OSError, aio_pika.exceptions.AMQPError) as exc:
                logger.warning("broker unreachable, retrying in %.1fs: %s", self._reconnect_interval, exc)
                await asyncio.sleep(self._reconnect_interval)
                continue
            try:
                channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
                self._exchange = await declare_stages(channel, self._retry_delays)
                version = server_version(connection)
                await declare_held(connection, version)
                if self._retention is not None:
                    await declare_streams(connection, self._retention)
            except BaseException:
                await connection.close()
                raise
            self._connection = connection
            self._publish_channel = channel
            logger.info("connected to RabbitMQ %s and declared the topology", version or "(version unknown)")
            self._ready.set()

    @contextlib.asynccontextmanager
    async def isolated_channel(self) -> AsyncIterator[aiormq.abc.AbstractChannel]:
        """A confirming aiormq channel of its own (returns raise), closed afterwards (publisher.py: large bodies)."""
        connection = self._connection
        if connection is None or not self.connected:
            raise ConnectionError("broker not connected")
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        try:
            yield await channel.get_underlay_channel()
        finally:
            if not channel.is_closed:
                await channel.close()

    async def consumer_channel(self, prefetch: int) -> AbstractChannel:
        """A new channel for one consumer, with its prefetch limit."""
        await self._ready.wait()
        if self._connection is None:
            raise ConnectionError("broker connection closed")
        channel = await self._connection.channel(publisher_confirms=False)
        await channel.set_qos(prefetch_count=prefetch)
        return channel

    async def close(self) -> None:
        """Close the connection; unacknowledged deliveries return to their queues."""
        self._closed = True
        if self._connection is not None:
            await self._connection.close()
            self._connection = None
