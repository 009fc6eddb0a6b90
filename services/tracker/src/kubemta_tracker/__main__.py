"""Entry point of `kubemta-tracker`: the index of the lifecycle event stream and its API.

Start-up order: the index file (created when new), the operations HTTP endpoint and the
(retrying) broker connection, the ingest (both streams, from the stored offsets or from the
start: a new replica rebuilds its index), then the API on `KUBEMTA_TRACKER_LISTEN`. /readyz
says ready once the broker is connected and the index caught up with the `events` stream as it
was at start (bounded, stream_reader.py), so a replica that is still replaying gets no
traffic. On SIGTERM: not ready, stop the API, stop reading, close the index and the broker.
"""

import asyncio
import logging

from kubemta_common.command_line import service_main
from kubemta_common.events.suppression_log import SuppressionLog
from kubemta_common.gc_tuning import freeze_startup
from kubemta_common.http_server import HttpServer
from kubemta_common.service import ServiceCore
from kubemta_tracker.api import create_app
from kubemta_tracker.context import TrackerContext
from kubemta_tracker.index import Index
from kubemta_tracker.ingest import Ingest
from kubemta_tracker.oldest_open import export_oldest_open
from kubemta_tracker.queue_depths import bus_queues, queue_depths
from kubemta_tracker.settings import TrackerSettings
from kubemta_tracker.suppression_sync import AppliedChanges
from kubemta_tracker.sync import BarrierSync

logger = logging.getLogger(__name__)

DESCRIPTION = (
    "kubemta tracker: indexes the lifecycle event stream and answers where a message is (find, show, queue "
    "summary, held mail, duplicate checks, the suppression list) and the queue administration commands, over an "
    "authenticated HTTP API."
)
SERVICE = "tracker"
DEPTHS_TIMEOUT = 2.0


class TrackerCore(ServiceCore):
    """ServiceCore whose /readyz also waits for the index to catch up with the stream."""

    def __init__(self, settings: TrackerSettings) -> None:
        super().__init__(SERVICE, settings)
        self.caught_up = asyncio.Event()

    def ready(self) -> bool:
        return super().ready() and self.caught_up.is_set()


def build(settings: TrackerSettings, core: ServiceCore, index: Index) -> tuple[TrackerContext, Ingest]:
    """The context the API serves and the ingest that feeds its index."""
    barriers = BarrierSync(core.events, settings.sync_timeout)
    names = bus_queues(settings.retry_schedule)
    applied = AppliedChanges()
    suppression_log = SuppressionLog(core.publisher, actor=SERVICE, ttl=settings.suppression_ttl)

    async def depths() -> dict[str, int]:
        return await queue_depths(core.broker, names, within=DEPTHS_TIMEOUT)

    context = TrackerContext(
        settings=settings,
        index=index,
        barriers=barriers,
        broker=core.broker,
        publisher=core.publisher,
        events=core.events,
        queue_depths=depths,
        suppression_log=suppression_log,
        applied=applied,
    )
    ingest = Ingest(
        core.broker,
        index,
        barriers,
        retention=settings.events_max_age,
        prune_interval=settings.prune_interval,
        applied=applied,
        suppression_ttl=settings.suppression_ttl,
    )
    return context, ingest


async def serve(stop: asyncio.Event) -> None:
    """Run the tracker until `stop` is set, then close."""
    settings = TrackerSettings.load()
    core = TrackerCore(settings)
    index = Index(settings.index_path)
    await index.open()
    await core.start(stop)
    if not settings.tracker_read_tokens and not settings.tracker_admin_tokens:
        logger.warning(
            "no API token is configured (KUBEMTA_TRACKER_READ_TOKENS, KUBEMTA_TRACKER_ADMIN_TOKENS): "
            "every request gets 401"
        )
    context, ingest = build(settings, core, index)
    ingesting = asyncio.create_task(ingest.run(), name="kubemta-tracker-ingest")
    waiting = asyncio.create_task(_mark_ready(ingest, core))
    oldest = asyncio.create_task(
        export_oldest_open(settings.index_path, ingest.caught_up), name="kubemta-tracker-oldest-open"
    )
    api: HttpServer | None = None
    try:
        if settings.tracker_listen is not None:
            api = HttpServer(create_app(context), settings.tracker_listen)
            await api.start()
            logger.info("serving the tracker API on %s", settings.tracker_listen)
        freeze_startup()
        await stop.wait()
    finally:
        core.begin_shutdown()
        if api is not None:
            await api.stop()
        for task in (oldest, waiting, ingesting):
            task.cancel()
        await asyncio.gather(oldest, waiting, ingesting, return_exceptions=True)
        await index.close()
        await core.close()
    logger.info("stopped")


async def _mark_ready(ingest: Ingest, core: TrackerCore) -> None:
    await ingest.caught_up.wait()
    core.caught_up.set()


def main() -> None:
    """Console script `kubemta-tracker`."""
    service_main(SERVICE, DESCRIPTION, TrackerSettings, serve)


if __name__ == "__main__":
    main()
