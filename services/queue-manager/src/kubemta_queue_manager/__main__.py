"""Entry point of `kubemta-queue-manager`: consume `inbound` and `results` until SIGTERM, then drain."""

import asyncio

from kubemta_common.amqp.consumer import Handler
from kubemta_common.amqp.topology import INBOUND, RESULTS
from kubemta_common.command_line import service_main
from kubemta_common.service import ServiceCore, serve_consumers
from kubemta_queue_manager.handlers import QueueManager
from kubemta_queue_manager.settings import QueueManagerSettings

DESCRIPTION = "kubemta queue-manager: splits accepted mail into delivery jobs, schedules retries, sends bounces."
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
    """Console script: parse the command line, then run until SIGTERM."""
    service_main(SERVICE, DESCRIPTION, QueueManagerSettings, serve)


if __name__ == "__main__":
    main()
