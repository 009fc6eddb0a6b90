"""Entry point of `kubemta-queue-manager`: consume `inbound` and `results` until SIGTERM, then drain."""

import asyncio

from kubemta_common.amqp.consumer import Handler
from kubemta_common.amqp.topology import INBOUND, RESULTS
from kubemta_common.runtime import run
from kubemta_common.service import ServiceCore, serve_consumers
from kubemta_queue_manager.handlers import QueueManager
from kubemta_queue_manager.settings import QueueManagerSettings

SERVICE = "queue-manager"


async def serve(stop: asyncio.Event) -> None:
    """Load the settings (ConfigError stops the process with a clear message) and run the consumers."""
    settings = QueueManagerSettings.load()
    core = ServiceCore(SERVICE, settings)

    def build(core: ServiceCore) -> list[tuple[str, Handler]]:
        manager = QueueManager(settings, core.publisher)
        return [(INBOUND, manager.on_inbound), (RESULTS, manager.on_result)]

    await serve_consumers(core, build, stop)


def main() -> None:
    """Console script `kubemta-queue-manager`."""
    run(serve)


if __name__ == "__main__":
    main()
