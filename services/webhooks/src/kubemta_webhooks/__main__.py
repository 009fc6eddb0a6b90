"""Entry point of `kubemta-webhooks`: apps' delivery events pushed to their HTTP endpoints (docs/webhooks.md).

Start-up: the operations HTTP endpoint (/metrics, /healthz, /readyz on KUBEMTA_METRICS_LISTEN, 9106 by
default) and the (retrying) broker connection, then the replica's parts (service.py): the endpoints
file, the sender and the competition for the stream reader's lock. /readyz says ready while the broker
is connected. On SIGTERM: not ready, stop leading (another replica takes the lock over), drain the
sender, close.
"""

import asyncio
import logging

from kubemta_common.command_line import service_main
from kubemta_common.gc_tuning import freeze_startup
from kubemta_common.service import ServiceCore
from kubemta_webhooks.service import WebhooksService
from kubemta_webhooks.settings import WebhooksSettings

logger = logging.getLogger(__name__)

DESCRIPTION = (
    "kubemta webhooks: reads the lifecycle event stream (one replica at a time) and POSTs each app's delivered, "
    "deferred, bounced and expired events to its HTTP endpoints, signed per Standard Webhooks, retried, at least once."
)
SERVICE = "webhooks"


async def serve(stop: asyncio.Event) -> None:
    """Run the webhooks service until `stop` is set, then close."""
    settings = WebhooksSettings.load()
    core = ServiceCore(SERVICE, settings)
    await core.start(stop)
    service = WebhooksService(settings, core)
    await service.start()
    try:
        freeze_startup()
        await stop.wait()
    finally:
        core.begin_shutdown()
        await service.stop()
        await core.close()
    logger.info("stopped")


def main() -> None:
    """Console script `kubemta-webhooks`."""
    service_main(SERVICE, DESCRIPTION, WebhooksSettings, serve)


if __name__ == "__main__":
    main()
