"""Entry point of `kubemta-queue-manager`: consume `inbound` and `results` until SIGTERM, then drain.

DKIM keys are made by `kubemta-admin dkim ...` (dkim_cli).
"""

import asyncio

from kubemta_common.amqp import stages
from kubemta_common.amqp.consumer import subscribe, subscribe_deliveries
from kubemta_common.command_line import service_main
from kubemta_common.events.decision_follower import BackgroundFollower
from kubemta_common.events.suppression_log import SuppressionLog
from kubemta_common.events.tracker_client import TrackerClient
from kubemta_common.route_answers import RouteAnswers
from kubemta_common.route_shortcut import RouteAnswerFollower
from kubemta_common.service import ConsumerSpec, ServiceCore, both_lanes, consume, serve_consumers
from kubemta_mail_auth.dkim.keys import KeyStore
from kubemta_queue_manager.dkim_signer import DkimSigner
from kubemta_queue_manager.handlers import QueueManager
from kubemta_queue_manager.settings import QueueManagerSettings

DESCRIPTION = (
    "kubemta queue-manager: DKIM-signs accepted mail, splits it into delivery jobs, schedules retries, sends bounces."
    " `kubemta-admin dkim --help` manages DKIM keys."
)
SERVICE = "queue-manager"


async def serve(stop: asyncio.Event) -> None:
    """Load the settings (ConfigError stops the process with a clear message) and run the consumers, following the
    operators' decisions meanwhile."""
    settings = QueueManagerSettings.load()
    core = ServiceCore(SERVICE, settings)
    signer = DkimSigner(KeyStore(settings.dkim_keys_dir)) if settings.dkim_keys_dir is not None else None
    tracker = TrackerClient.from_settings(settings)
    following = BackgroundFollower(settings.decisions_max_age)
    suppressions: SuppressionLog | None = None
    route_answers = RouteAnswers(settings.route_answers_size) if settings.route_shortcut else None
    answer_follower: RouteAnswerFollower | None = None

    def build(core: ServiceCore) -> list[ConsumerSpec]:
        nonlocal suppressions, answer_follower
        follower = following.start(core.broker)
        if route_answers is not None:  # the resolver's answers (routes stream): route_shortcut.py
            answer_follower = RouteAnswerFollower(core.broker, route_answers)
            answer_follower.start()
        # hard invalid_recipient bounces go to the cluster's suppression list (docs/suppression.md)
        suppressions = SuppressionLog(core.publisher, actor=SERVICE, ttl=settings.suppression_ttl)
        suppressions.start()
        manager = QueueManager(
            settings,
            core.publisher,
            events=core.events,
            signer=signer,
            tracker=tracker,
            decisions=follower.decisions,
            decisions_ready=follower.ready,
            suppression=suppressions,
            route_answers=route_answers,
        )
        return [
            *both_lanes(subscribe_deliveries(stages.INBOUND, manager.handle_accepted)),
            *both_lanes(subscribe_deliveries(stages.RESULTS, manager.handle_result)),
            # holds the DSN requests of one window: its prefetch is the batcher's bound
            consume(
                subscribe(stages.DSN, manager.handle_dsn_request),
                prefetch=settings.dsn_batch_limit,
                on_drain=manager.batcher.flush_all,
                carries_content=False,
            ),
        ]

    async def publish_suppressions() -> None:
        if suppressions is not None:
            await suppressions.close(settings.drain_seconds)

    try:
        await serve_consumers(core, build, stop, before_close=publish_suppressions)
    finally:
        if answer_follower is not None:
            await answer_follower.stop()
        await following.stop()
        if tracker is not None:
            await tracker.close()


def main() -> None:
    """Console script: parse the command line, then run until SIGTERM."""
    service_main(SERVICE, DESCRIPTION, QueueManagerSettings, serve)


if __name__ == "__main__":
    main()
