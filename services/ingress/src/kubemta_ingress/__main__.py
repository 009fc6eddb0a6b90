"""Entry point of `kubemta-ingress`: the SMTP listener in front of the `inbound` queue.

Start-up order: operations HTTP endpoint and the (retrying) broker connection first,
then the SMTP listener, which accepts connections even while the broker is still
unreachable (messages then get `451 4.3.0`; /readyz reports 503 until connected).
On SIGTERM: stop accepting, let open transactions finish within
`KUBEMTA_DRAIN_SECONDS`, close the remaining sessions, close the broker connection.
"""

import asyncio
import logging

from kubemta_common.runtime import run
from kubemta_common.service import ServiceCore
from kubemta_ingress.handler import IngressHandler
from kubemta_ingress.interfaces import MessagePublisher
from kubemta_ingress.policy import RelayPolicy
from kubemta_ingress.server import SmtpServer
from kubemta_ingress.settings import IngressSettings

logger = logging.getLogger(__name__)

SERVICE = "ingress"


def build_server(settings: IngressSettings, publisher: MessagePublisher) -> SmtpServer | None:
    """The SMTP server described by `settings`, or None when `KUBEMTA_SMTP_LISTEN` is empty."""
    if settings.smtp_listen is None:
        return None
    handler = IngressHandler(
        hostname=settings.hostname,
        policy=RelayPolicy.create(settings.local_domains, settings.relay_networks),
        max_recipients=settings.max_recipients,
        max_message_size=settings.max_message_size,
        publisher=publisher,
    )
    return SmtpServer(
        handler,
        listen=settings.smtp_listen,
        hostname=settings.hostname,
        max_message_size=settings.max_message_size,
        timeout=settings.smtp_timeout,
    )


async def serve(stop: asyncio.Event) -> None:
    """Run the ingress until `stop` is set, then drain and close."""
    settings = IngressSettings.load()
    core = ServiceCore(SERVICE, settings)
    await core.start()
    try:
        server = build_server(settings, core.publisher)
        if server is None:
            logger.warning("KUBEMTA_SMTP_LISTEN is empty: no SMTP listener", extra={"queue_id": None})
        else:
            await server.start()
        await stop.wait()
        if server is not None:
            await server.stop(settings.drain_seconds)
    finally:
        await core.close()
    logger.info("stopped", extra={"queue_id": None})


def main() -> None:
    """Console script `kubemta-ingress`."""
    run(serve)


if __name__ == "__main__":
    main()
