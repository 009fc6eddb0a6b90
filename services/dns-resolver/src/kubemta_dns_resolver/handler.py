"""The `route` consumer: attach a route to each DeliveryJob and pass it on.

A routed job goes to `deliver`; a job that cannot be routed becomes a DeliveryResult
(one RecipientResult per recipient, no SMTP code) on `results`, where the
queue-manager retries it (temporary) or bounces it (permanent). The handler returns,
and so lets the consumer acknowledge the job, only after that publish was confirmed;
a failed publish (PublishFailed) propagates and the job returns to `route`.
"""

import logging
from typing import Protocol

from kubemta.v1 import message_pb2
from kubemta_common.amqp import stages
from kubemta_common.amqp.publisher import BusPublisher
from kubemta_common.logs import message_context, sanitize
from kubemta_common.timestamps import now_timestamp
from kubemta_dns_resolver.metrics import ROUTES
from kubemta_dns_resolver.router import RouteFailure

logger = logging.getLogger(__name__)

REPORTER = "dns-resolver"
LOGGED_HOSTS = 5


class DomainRouter(Protocol):
    """What the handler needs from router.Router."""

    async def route(self, domain: str) -> message_pb2.Route | RouteFailure: ...


class RouteHandler:
    """Consumes `route` (its `handle` is the stage's handler); publishes to `deliver` or `results`."""

    def __init__(self, router: DomainRouter, publisher: BusPublisher) -> None:
        self._router = router
        self._publisher = publisher

    async def handle(self, job: message_pb2.DeliveryJob) -> None:
        """Route one job and publish its successor."""
        with message_context(job.queue_id, job.job_id):
            await self._route(job)

    async def _route(self, job: message_pb2.DeliveryJob) -> None:
        result = await self._router.route(job.domain)
        log_extra = {"domain": sanitize(job.domain)}
        if isinstance(result, RouteFailure):
            await self._publish_failure(job, result)
            outcome = "temporary" if result.temporary else "permanent"
            ROUTES.labels(source=result.source, result=outcome).inc()
            logger.info(
                "no route for %s (%s): %s %s",
                sanitize(job.domain),
                result.source,
                result.status,
                result.diagnostic,
                extra={**log_extra, "source": result.source, "result": outcome, "status": result.status},
            )
            return
        job.route.CopyFrom(result)
        await self._publisher.publish(stages.DELIVER, job, message_id=job.job_id)
        ROUTES.labels(source=result.source, result="ok").inc()
        logger.info(
            "routed %s via %s: %s",
            sanitize(job.domain),
            result.source,
            _describe_hosts(result),
            extra={**log_extra, "source": result.source, "result": "ok", "provider": result.provider},
        )

    async def _publish_failure(self, job: message_pb2.DeliveryJob, failure: RouteFailure) -> None:
        outcome = message_pb2.OUTCOME_TEMPORARY if failure.temporary else message_pb2.OUTCOME_PERMANENT
        result = message_pb2.DeliveryResult(
            job=job,
            recipients=[
                message_pb2.RecipientResult(
                    recipient=recipient,
                    outcome=outcome,
                    smtp_code=0,
                    status=failure.status,
                    diagnostic=failure.diagnostic,
                )
                for recipient in job.recipients
            ],
            attempted_at=now_timestamp(),
            reporter=REPORTER,
        )
        await self._publisher.publish(stages.RESULTS, result, message_id=job.job_id)


def _describe_hosts(route: message_pb2.Route) -> str:
    shown = [host.unix_socket or f"{host.hostname}[{host.address}]:{host.port}" for host in route.hosts[:LOGGED_HOSTS]]
    more = len(route.hosts) - LOGGED_HOSTS
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")
