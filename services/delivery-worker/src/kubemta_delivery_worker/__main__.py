"""Entry point of `kubemta-delivery-worker`: consume `deliver`, deliver over SMTP, publish results."""

import asyncio

from kubemta_common.amqp import stages
from kubemta_common.amqp.consumer import subscribe_deliveries
from kubemta_common.command_line import service_main
from kubemta_common.service import ConsumerSpec, ServiceCore, both_lanes, serve_consumers
from kubemta_delivery_worker.deliverer import Deliverer, build_deliverer
from kubemta_delivery_worker.handler import DeliverHandler
from kubemta_delivery_worker.settings import WorkerSettings

DESCRIPTION = "kubemta delivery-worker: delivers jobs over SMTP and reports per-recipient results."
SERVICE = "delivery-worker"


def build(core: ServiceCore, settings: WorkerSettings, deliverer: Deliverer | None = None) -> list[ConsumerSpec]:
    """The worker's one consumer: `deliver`."""
    handler = DeliverHandler(
        deliverer or build_deliverer(settings), core.publisher, delivery_limit=settings.delivery_limit
    )
    return both_lanes(subscribe_deliveries(stages.DELIVER, handler))


async def serve(stop: asyncio.Event) -> None:
    """Load the settings and run until `stop` is set."""
    settings = WorkerSettings.load()
    core = ServiceCore(SERVICE, settings)
    deliverer = build_deliverer(settings)
    try:
        await serve_consumers(core, lambda c: build(c, settings, deliverer), stop)
    finally:
        await deliverer.close()  # QUIT the idle cached connections


def main() -> None:
    """Console script: parse the command line, then run until SIGTERM."""
    service_main(SERVICE, DESCRIPTION, WorkerSettings, serve)


if __name__ == "__main__":
    main()
