"""The skeleton of a kubemta service: broker connection, operations HTTP server, consumers,
and an orderly shutdown (stop consuming, drain in-flight work, close).

Consumer services (queue-manager, dns-resolver, delivery-worker) call
`serve_consumers`; the ingress uses `ServiceCore` directly around its SMTP server.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from kubemta_common.amqp.broker import Broker
from kubemta_common.amqp.consumer import Consumer, Subscription
from kubemta_common.amqp.memory import ByteGate, content_prefetch
from kubemta_common.amqp.publisher import Publisher
from kubemta_common.amqp.streams import StreamRetention
from kubemta_common.amqp.stuck_connection import broker_answers, watch
from kubemta_common.amqp.topology import large
from kubemta_common.background_task import cancel_and_wait
from kubemta_common.events.emitter import EventLog
from kubemta_common.events.log_kinds import logged_kinds
from kubemta_common.gc_tuning import freeze_startup
from kubemta_common.http_server import HttpServer, health_app
from kubemta_common.logs import setup_logging
from kubemta_common.metrics import BROKER_CONNECTED, record_build_info
from kubemta_common.runtime import StopEvent
from kubemta_common.settings import ServiceSettings

logger = logging.getLogger(__name__)


class ServiceCore:
    """Broker, publisher and the /metrics + health endpoint of one service process."""

    def __init__(self, name: str, settings: ServiceSettings) -> None:
        self.name = name
        self.settings = settings
        self.broker = Broker(
            settings.amqp_url.get_secret_value(),
            name=f"kubemta-{name}",
            retry_delays=settings.retry_schedule,
            reconnect_interval=settings.amqp_reconnect_interval,
            retention=StreamRetention(
                events_max_age=settings.events_max_age,
                events_max_bytes=settings.events_max_bytes,
                decisions_max_age=settings.decisions_max_age,
                suppressions_max_age=settings.suppression_ttl,
            ),
        )
        self.publisher = Publisher(self.broker, settings.publish_timeout, settings.broker_max_message_size)
        self.events = EventLog(
            self.broker,
            service=name,
            buffer=settings.events_buffer,
            confirm_timeout=settings.events_confirm_timeout,
            publish_timeout=settings.publish_timeout,
            logged_kinds=logged_kinds(settings.log_events),
        )
        """Lifecycle events of this process, published to the `events` stream (events/emitter.py)."""
        self._http: HttpServer | None = None
        self._broker_task: asyncio.Task[None] | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._shutting_down = False

    def ready(self) -> bool:
        """Ready while connected to the broker and not shutting down."""
        return self.broker.connected and not self._shutting_down

    def begin_shutdown(self) -> None:
        """From now on /readyz answers 503, so load balancers stop sending work before the service stops taking it."""
        if not self._shutting_down:
            self._shutting_down = True
            logger.info("shutting down: not ready any more")

    async def start(self, stop: asyncio.Event | None = None) -> None:
        """Start the HTTP endpoint and the (retrying) broker connection; with `stop` (the service's main's), also the
        watchdog of a stuck connection (KUBEMTA_BROKER_STUCK_AFTER), which fails the StopEvent (or sets the event)."""
        setup_logging(self.name, self.settings.log_format, self.settings.log_level)
        record_build_info(self.name)
        BROKER_CONNECTED.labels(service=self.name).set_function(lambda: 1.0 if self.broker.connected else 0.0)
        if self.settings.metrics_listen is not None:
            self._http = HttpServer(health_app(self.ready), self.settings.metrics_listen)
            await self._http.start()
            logger.info("serving /metrics and health on %s", self.settings.metrics_listen)
        self._broker_task = asyncio.create_task(self.broker.run())
        self.events.start()
        stuck_after = self.settings.broker_stuck_after
        if stop is not None and stuck_after > 0:
            url = self.settings.amqp_url.get_secret_value()

            def on_stuck(reason: str) -> None:
                if isinstance(stop, StopEvent):
                    stop.fail(reason)
                else:
                    stop.set()

            self._watchdog = asyncio.create_task(
                watch(
                    lambda: self.broker.connected,
                    lambda: broker_answers(url),
                    on_stuck,
                    stuck_after=stuck_after,
                    check_every=min(10.0, stuck_after / 4),
                )
            )

    async def close(self) -> None:
        """Close the broker connection and the HTTP endpoint."""
        if self._watchdog is not None:
            await cancel_and_wait(self._watchdog)
        await self.events.close(drain_seconds=5.0)
        if self._broker_task is not None and not self._broker_task.done():
            self._broker_task.cancel()
        await self.broker.close()
        if self._http is not None:
            await self._http.stop()


@dataclass(frozen=True)
class ConsumerSpec:
    """One queue a service consumes (`consume`, `both_lanes`): the stage it belongs to and its handler, its own
    prefetch (default KUBEMTA_AMQP_PREFETCH), and what to call when the service starts draining (e.g. send what a
    batching handler holds)."""

    queue: str
    subscription: Subscription
    prefetch: int | None = None
    on_drain: Callable[[], None] | None = None
    carries_content: bool = True
    """Its messages hold a whole mail message: its handlers share KUBEMTA_CONSUMER_MEMORY (memory.py)."""
    large_lane: bool = False
    """It reads a stage's large lane (topology.py): its prefetch comes from KUBEMTA_CONSUMER_MEMORY."""


def consume(
    subscription: Subscription,
    *,
    prefetch: int | None = None,
    on_drain: Callable[[], None] | None = None,
    carries_content: bool = True,
) -> ConsumerSpec:
    """The consumer of a stage's queue (its small lane only, see `both_lanes`)."""
    return ConsumerSpec(subscription.stage.queue, subscription, prefetch, on_drain, carries_content)


def both_lanes(subscription: Subscription) -> list[ConsumerSpec]:
    """The consumers of a content stage: its small lane and its large lane, with the same handler."""
    queue = subscription.stage.queue
    if not subscription.stage.large_lane:
        raise ValueError(f"stage {queue} has no large lane")
    return [ConsumerSpec(queue, subscription), ConsumerSpec(large(queue), subscription, large_lane=True)]


async def serve_consumers(
    core: ServiceCore,
    build: Callable[[ServiceCore], list[ConsumerSpec]],
    stop: asyncio.Event,
    *,
    before_close: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Run a consumer service until `stop` is set, then drain and close; `before_close` runs after the consumers
    stopped, while the broker connection is still open (to publish what a service still buffers)."""
    await core.start(stop)
    specs = build(core)
    settings = core.settings
    large_specs = [spec for spec in specs if spec.large_lane]
    large_prefetch = content_prefetch(
        prefetch=settings.amqp_prefetch,
        budget=settings.consumer_memory,
        consumers=len(large_specs),
        max_message_size=settings.max_message_size,
    )
    gate = ByteGate(settings.consumer_memory // 2)
    consumers = [
        Consumer(
            core.broker,
            spec.queue,
            spec.subscription.on_delivery,
            prefetch=spec.prefetch or (large_prefetch if spec.large_lane else settings.amqp_prefetch),
            gate=gate if spec.carries_content else None,
            batch_window=settings.consumer_batch_window,
        )
        for spec in specs
    ]
    if large_specs:
        logger.info(
            "large lanes: prefetch %d each, so %d messages of %d bytes fit KUBEMTA_CONSUMER_MEMORY",
            large_prefetch,
            large_prefetch * len(large_specs),
            settings.max_message_size,
        )
    starting = [asyncio.create_task(consumer.start()) for consumer in consumers]
    freeze_startup()
    await stop.wait()
    core.begin_shutdown()
    for spec in specs:
        if spec.on_drain is not None:
            spec.on_drain()
    for task in starting:
        task.cancel()
    await asyncio.gather(*(consumer.stop(core.settings.drain_seconds) for consumer in consumers))
    if before_close is not None:
        await before_close()
    await core.close()
    logger.info("stopped")
