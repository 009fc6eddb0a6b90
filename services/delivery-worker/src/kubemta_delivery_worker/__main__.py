"""Entry point of `kubemta-delivery-worker`: consume `deliver`, deliver over SMTP, publish results.

Beside the consumers: the lifecycle event log (ServiceCore's), a `DecisionFollower` that keeps the
operators' delete/hold rules from the `decisions` stream (deliveries wait, bounded, until it read
what the stream held at the start), and the tracker client of the redelivery guard (None without
KUBEMTA_TRACKER_URL).
"""

import asyncio
from pathlib import Path

from kubemta_common.amqp import stages
from kubemta_common.amqp.consumer import subscribe_deliveries
from kubemta_common.command_line import service_main
from kubemta_common.events.decision_follower import BackgroundFollower, DecisionFollower
from kubemta_common.events.tracker_client import TrackerClient
from kubemta_common.service import ConsumerSpec, ServiceCore, both_lanes, serve_consumers
from kubemta_delivery_worker.deliverer import Deliverer, build_deliverer
from kubemta_delivery_worker.finished import JobRecords
from kubemta_delivery_worker.handler import DeliverHandler
from kubemta_delivery_worker.journal import DeliveryJournal
from kubemta_delivery_worker.settings import WorkerSettings

DESCRIPTION = "kubemta delivery-worker: delivers jobs over SMTP and reports per-recipient results."
SERVICE = "delivery-worker"


def build(
    core: ServiceCore,
    settings: WorkerSettings,
    deliverer: Deliverer | None = None,
    *,
    follower: DecisionFollower | None = None,
    tracker: JobRecords | None = None,
    journal: DeliveryJournal | None = None,
) -> list[ConsumerSpec]:
    """The worker's one consumer: `deliver`."""
    handler = DeliverHandler(
        deliverer or build_deliverer(settings),
        core.publisher,
        delivery_limit=settings.delivery_limit,
        events=core.events,
        tracker=tracker,
        decisions=follower.decisions if follower is not None else None,
        decisions_ready=follower.ready if follower is not None else None,
        journal=journal,
    )
    return both_lanes(subscribe_deliveries(stages.DELIVER, handler))


async def serve(stop: asyncio.Event) -> None:
    """Load the settings and run until `stop` is set."""
    settings = WorkerSettings.load()
    core = ServiceCore(SERVICE, settings)
    deliverer = build_deliverer(settings)
    tracker = TrackerClient.from_settings(settings)  # None: no redelivery guard
    following = BackgroundFollower(settings.decisions_max_age)
    follower = following.start(core.broker)
    journal = DeliveryJournal(Path(settings.delivery_journal)) if settings.delivery_journal else None
    try:
        await serve_consumers(
            core,
            lambda c: build(c, settings, deliverer, follower=follower, tracker=tracker, journal=journal),
            stop,
        )
    finally:
        if journal is not None:
            journal.close()
        if tracker is not None:
            await tracker.close()
        await following.stop()
        await deliverer.close()  # QUIT the idle cached connections


def main() -> None:
    """Console script: parse the command line, then run until SIGTERM."""
    service_main(SERVICE, DESCRIPTION, WorkerSettings, serve)


if __name__ == "__main__":
    main()
