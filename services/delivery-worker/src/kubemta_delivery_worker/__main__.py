"""Entry point of `kubemta-delivery-worker`: consume `deliver`, deliver over SMTP, publish results."""

import asyncio

from kubemta_common.amqp.consumer import Handler
from kubemta_common.amqp.topology import DELIVER
from kubemta_common.command_line import service_main
from kubemta_common.service import ServiceCore, serve_consumers
from kubemta_delivery_worker.deliverer import Deliverer, smtp_options
from kubemta_delivery_worker.handler import DeliverHandler
from kubemta_delivery_worker.settings import WorkerSettings

DESCRIPTION = "kubemta delivery-worker: delivers jobs over SMTP and reports per-recipient results."
SERVICE = "delivery-worker"


def build(core: ServiceCore, settings: WorkerSettings) -> list[tuple[str, Handler]]:
    """The worker's one consumer: `deliver`."""
    return [(DELIVER, DeliverHandler(Deliverer(smtp_options(settings)), core.publisher))]


async def serve(stop: asyncio.Event) -> None:
    """Load the settings and run until `stop` is set."""
    settings = WorkerSettings.load()
    core = ServiceCore(SERVICE, settings)
    await serve_consumers(core, lambda c: build(c, settings), stop)


def main() -> None:
    """Console script: parse the command line, then run until SIGTERM."""
    service_main(SERVICE, DESCRIPTION, WorkerSettings, serve)


if __name__ == "__main__":
    main()
