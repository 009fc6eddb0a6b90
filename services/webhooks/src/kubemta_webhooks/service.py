"""One webhooks replica: the endpoints file, the leader that reads the stream, and the sender.

`WebhooksService(settings, core)` runs beside a started ServiceCore (broker, publisher, /metrics):
`start()` reads the endpoints file and re-reads it every KUBEMTA_WEBHOOKS_RELOAD_INTERVAL; once a valid
file was read it declares the webhook queues, starts the sender (a Consumer of `webhooks` with
prefetch KUBEMTA_WEBHOOK_PREFETCH) and starts competing for the leader lock (reader.py). Without
KUBEMTA_WEBHOOKS_FILE it does neither: nothing is read, nothing is sent, and queued webhooks wait.
`stop()` stops leading (the lock goes to another replica), then drains the sender.
"""

import asyncio
import contextlib
import logging

from kubemta_common.amqp.consumer import Consumer, subscribe
from kubemta_common.service import ServiceCore
from kubemta_webhooks.endpoints import EndpointsFile
from kubemta_webhooks.metrics import preinitialise_endpoints
from kubemta_webhooks.queues import SEND, WEBHOOKS, declare_send_queues
from kubemta_webhooks.reader import StreamLeader
from kubemta_webhooks.sender import Sender, new_client
from kubemta_webhooks.settings import WebhooksSettings

logger = logging.getLogger(__name__)


class WebhooksService:
    """The endpoints file, the stream leader and the sender of one replica."""

    def __init__(self, settings: WebhooksSettings, core: ServiceCore) -> None:
        self.settings = settings
        self.core = core
        self.endpoints = EndpointsFile(settings.webhooks_file)
        tiers = tuple(settings.webhook_retry_tiers)
        self.leader = StreamLeader(
            settings.amqp_url.get_secret_value(),
            self.endpoints,
            tiers=tiers,
            retry=settings.webhook_leader_retry,
            checkpoint_interval=settings.webhook_checkpoint_interval,
            publish_timeout=settings.publish_timeout,
        )
        self.client = new_client(settings.webhook_timeout, settings.webhook_prefetch)
        self.sender = Sender(
            self.endpoints,
            core.publisher,
            self.client,
            tiers=tiers,
            max_age=settings.webhook_max_age,
            timeout=settings.webhook_timeout,
        )
        self.consumer = Consumer(
            core.broker, WEBHOOKS, subscribe(SEND, self.sender.handle).on_delivery, prefetch=settings.webhook_prefetch
        )
        self.sending = asyncio.Event()
        """Set once the sender consumes `webhooks`."""
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Start watching the endpoints file; the sender and the leader start once it was read."""
        if self.settings.webhooks_file is None:
            logger.warning("KUBEMTA_WEBHOOKS_FILE is not set: no webhook is read from the stream or sent")
            return
        self._refresh()
        self._tasks = [
            asyncio.create_task(self._watch(), name="kubemta-webhooks-file"),
            asyncio.create_task(self._start_sending(), name="kubemta-webhooks-sender"),
            asyncio.create_task(self.leader.run(), name="kubemta-webhooks-leader"),
        ]

    def _refresh(self) -> None:
        if self.endpoints.refresh():
            preinitialise_endpoints(sorted(self.endpoints.endpoints))

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.settings.webhooks_reload_interval)
            self._refresh()

    async def _start_sending(self) -> None:
        await self.endpoints.loaded_event.wait()
        while True:
            try:
                await self.core.broker.wait_ready()
                channel = await self.core.broker.consumer_channel(1)
                try:
                    await declare_send_queues(channel, self.settings.webhook_retry_tiers)
                finally:
                    await channel.close()
                await self.consumer.start()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning("could not start sending webhooks (%r); again in %.1fs", exc, 2.0)
                await asyncio.sleep(2.0)
                continue
            self.sending.set()
            return

    async def stop(self) -> None:
        """Stop leading and reading the file, drain the sender, close the HTTP client."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.consumer.stop(self.settings.drain_seconds)
        with contextlib.suppress(Exception):
            await self.client.aclose()
