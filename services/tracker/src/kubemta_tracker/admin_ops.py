"""Queue administration on the bus: flush, hold, release and delete, at least once, never losing a message.

The tracker owns no message; an operator's command either moves messages between queues the
way every service does (publish the copy with a confirm, THEN acknowledge the original), or
appends an `AdminDecision` to the `decisions` stream that the message's owner honours when it
next touches it (the dns-resolver and delivery-worker before work, the queue-manager before a
retry). Each command appends one `admin_action` lifecycle event (actor, verb, selector, how many
messages it moved right away, decision id).

- `flush(domain)`: jobs waiting in the retry queues (both lanes) go back to `route` (its large
  lane for the large lane's jobs) now instead of when their TTL runs out.
- `hold(selector)`: the HOLD decision (confirmed first: a failed publish raises, the API answers
  503, nothing moved), then matching jobs in the retry queues move to `held` with the
  `x-kubemta-*` headers (amqp/held.py) and a `held` event each.
- `release(selector | all)`: the RELEASE decision (so no resolver holds the job again), then matching
  messages on `held` go back: admin-held jobs to their `x-kubemta-release-to` queue, messages RabbitMQ
  dead-lettered there (poison, malformed) to the queue `x-death` names; a `released` event each.
- `delete(selector, dsn)`: the DELETE decision, then matching messages on `held` are dropped
  (`deleted` event, stage "held"); with `dsn`, a permanent-failure `DeliveryResult` ("5.3.0",
  "deleted by the administrator": kubemta_common.events.deletion, as the resolver and the worker
  report it) goes to `results` first so the queue-manager bounces it. Mail
  elsewhere in the pipeline is deleted by its owner, through the decision.

The commands compose two pieces: selectors.py (which messages a command names, matched as the services'
`Decisions` view matches) and queue_scan.py (one basic.get pass over a queue, moving a message by
publishing its copy with a confirm and only then acknowledging it, returning the others). A body that
does not decode is left where it is and logged.
"""

import asyncio
import logging
import secrets
from collections.abc import Iterable
from datetime import UTC

from aio_pika.abc import AbstractIncomingMessage

from kubemta.v1 import events_pb2
from kubemta_common.amqp import stages
from kubemta_common.amqp.broker import Broker
from kubemta_common.amqp.held import JOB_TYPE, hold_job, release_target, released_job
from kubemta_common.amqp.publisher import Publisher
from kubemta_common.amqp.streams import DECISIONS
from kubemta_common.amqp.topology import DSN, HELD, ROUTE, STAGE_QUEUES, large, retry_queue_name
from kubemta_common.events.deletion import deletion_result
from kubemta_common.events.emitter import EventSink
from kubemta_common.timestamps import now_timestamp
from kubemta_tracker.queue_scan import BrokerUnavailable, QueueScan, Take
from kubemta_tracker.selectors import ALL, Facts, Selector, facts_of

logger = logging.getLogger(__name__)

DECISION_TYPE = events_pb2.AdminDecision.DESCRIPTOR.full_name
REPORTER = "tracker"
"""The reporter of the results a deletion with a DSN publishes."""
RELEASE_TARGETS = frozenset((*STAGE_QUEUES, DSN))
"""Where a release may send a held message back to: the queues that dead-letter to `held`."""


class AdminOps:
    """The queue administration commands of the tracker API (admin_api.py)."""

    def __init__(
        self, broker: Broker, publisher: Publisher, events: EventSink, *, retry_delays: Iterable[float], timeout: float
    ) -> None:
        self._broker = broker
        self._publisher = publisher
        self._events = events
        self._retry = tuple(retry_queue_name(delay) for delay in sorted(set(retry_delays)))
        self._queues = QueueScan(broker, timeout=timeout)
        self._lock = asyncio.Lock()  # one command at a time per replica: counts stay honest

    def retry_queues(self) -> list[tuple[str, str]]:
        """Every retry queue (both lanes) and the route lane its jobs go back to."""
        return [pair for name in self._retry for pair in ((name, ROUTE), (large(name), large(ROUTE)))]

    async def flush(self, domain: str | None, *, actor: str) -> int:
        """Send the retry queues' jobs (for `domain`, case-insensitive; all when None) to `route` now; how many."""
        selector = Selector.parse(domain=domain) if domain else ALL
        moved = 0

        def to(target: str) -> Take:
            async def take(message: AbstractIncomingMessage) -> bool:
                facts = self._readable(message)
                if facts is None or not selector.matches(facts):
                    return False
                await self._publisher.publish_raw(
                    target, message.body, message_id=message.message_id or facts.job_id, message_type=JOB_TYPE
                )
                return True

            return take

        async with self._lock:
            try:
                for queue, target in self.retry_queues():
                    moved += await self._queues.scan(queue, to(target))
            finally:
                self._admin_action("flush", selector, moved, decision_id="", actor=actor)
        logger.info("flush %s by %s: %d jobs back to route", selector.describe(), actor, moved)
        return moved

    async def hold(self, selector: Selector, *, actor: str) -> tuple[str, int]:
        """Record a HOLD decision, then move matching jobs from the retry queues to `held`; (decision id, moved)."""
        self._refuse_all(selector, "hold")
        decision = await self._decide(events_pb2.DECISION_VERB_HOLD, selector, actor)
        moved = 0

        async def take(message: AbstractIncomingMessage) -> bool:
            facts = self._readable(message)
            if facts is None or not selector.matches(facts):
                return False
            await hold_job(
                self._publisher,
                message.body,
                queue_id=facts.queue_id,
                job_id=facts.job_id,
                decision_id=decision.decision_id,
            )
            event = self._event(facts)
            event.held.CopyFrom(
                events_pb2.Held(reason="admin", release_to=ROUTE, decision_id=decision.decision_id, actor=actor)
            )
            self._events.emit(event)
            return True

        async with self._lock:
            try:
                for queue, _ in self.retry_queues():
                    moved += await self._queues.scan(queue, take)
            finally:
                self._admin_action("hold", selector, moved, decision_id=decision.decision_id, actor=actor)
        logger.info(
            "hold %s by %s (decision %s): %d jobs to held", selector.describe(), actor, decision.decision_id, moved
        )
        return decision.decision_id, moved

    async def release(self, selector: Selector, *, actor: str) -> tuple[str, int]:
        """Record a RELEASE decision, then send matching `held` messages back where they came from."""
        decision = await self._decide(events_pb2.DECISION_VERB_RELEASE, selector, actor)
        moved = 0

        async def take(message: AbstractIncomingMessage) -> bool:
            facts = facts_of(message.type, message.body)
            if not selector.matches(facts):
                return False
            target = release_target(message.headers)
            if target not in RELEASE_TARGETS:
                logger.warning(
                    "held message %s (type %r) not released: no known queue to send it back to (%r)",
                    message.message_id,
                    message.type,
                    target,
                )
                return False
            body = message.body
            if message.type == JOB_TYPE and facts is not None:  # facts: it decoded as a DeliveryJob
                body = released_job(body, decision.time.ToDatetime(UTC))
            event = self._event(facts)
            event.released.CopyFrom(events_pb2.Released(released_to=target, actor=actor))
            event.time.CopyFrom(now_timestamp())  # before the publish: the resolver's `routed` comes after it
            await self._publisher.publish_raw(
                target,
                body,
                message_id=message.message_id or (facts.job_id if facts else ""),
                message_type=message.type or "",
            )
            self._events.emit(event)
            return True

        async with self._lock:
            try:
                moved = await self._queues.scan(HELD, take)
            finally:
                self._admin_action("release", selector, moved, decision_id=decision.decision_id, actor=actor)
        logger.info(
            "release %s by %s (decision %s): %d released", selector.describe(), actor, decision.decision_id, moved
        )
        return decision.decision_id, moved

    async def delete(self, selector: Selector, *, dsn: bool, actor: str) -> tuple[str, int]:
        """Record a DELETE decision, then drop matching `held` messages (bounced first when `dsn`)."""
        self._refuse_all(selector, "delete")
        decision = await self._decide(events_pb2.DECISION_VERB_DELETE, selector, actor, dsn=dsn)
        moved = 0

        async def take(message: AbstractIncomingMessage) -> bool:
            facts = facts_of(message.type, message.body)
            if facts is None or not selector.matches(facts):
                return False
            bounced = dsn and facts.job is not None
            if bounced:
                assert facts.job is not None
                result = deletion_result(facts.job, reporter=REPORTER)
                await self._publisher.publish(stages.RESULTS, result, message_id=facts.job_id)
            deleted = events_pb2.Deleted(
                decision_id=decision.decision_id,
                actor=actor,
                dsn_requested=bounced,
                recipients=facts.recipients,
                stage=HELD,
            )
            event = self._event(facts)
            event.deleted.CopyFrom(deleted)
            self._events.emit(event)
            return True

        async with self._lock:
            try:
                moved = await self._queues.scan(HELD, take)
            finally:
                self._admin_action("delete", selector, moved, decision_id=decision.decision_id, actor=actor, dsn=dsn)
        logger.info(
            "delete %s by %s (decision %s): %d deleted", selector.describe(), actor, decision.decision_id, moved
        )
        return decision.decision_id, moved

    @staticmethod
    def _refuse_all(selector: Selector, verb: str) -> None:
        if selector.all:
            raise ValueError(f"{verb} does not take all")

    async def _decide(
        self, verb: "events_pb2.DecisionVerb.ValueType", selector: Selector, actor: str, *, dsn: bool = False
    ) -> events_pb2.AdminDecision:
        """Append the decision to the `decisions` stream, confirmed (PublishFailed otherwise)."""
        decision = events_pb2.AdminDecision(
            decision_id=secrets.token_hex(12),
            time=now_timestamp(),
            actor=actor,
            verb=verb,
            selector=selector.to_proto(),
            dsn=dsn,
        )
        if not self._broker.connected:
            raise BrokerUnavailable("the broker is not reachable")
        await self._publisher.publish_raw(
            DECISIONS, decision.SerializeToString(), message_id=decision.decision_id, message_type=DECISION_TYPE
        )
        return decision

    @staticmethod
    def _readable(message: AbstractIncomingMessage) -> Facts | None:
        """The job a retry queue holds (a message without a type is read as one); None (logged: it stays) when it
        is not one."""
        facts = facts_of(JOB_TYPE, message.body) if message.type in (None, "", JOB_TYPE) else None
        if facts is None:
            logger.warning(
                "a message on %s (%s, type %r) is not a delivery job; left where it is",
                message.routing_key,
                message.message_id,
                message.type,
            )
        return facts

    @staticmethod
    def _event(facts: Facts | None) -> events_pb2.LifecycleEvent:
        """An event about the message `facts` describes (its ids), its kind still to be set."""
        if facts is None:
            return events_pb2.LifecycleEvent()
        return events_pb2.LifecycleEvent(
            queue_id=facts.queue_id, job_id=facts.job_id, message_id=facts.message_id, attempt=facts.attempt
        )

    def _admin_action(
        self, verb: str, selector: Selector, affected: int, *, decision_id: str, actor: str, dsn: bool = False
    ) -> None:
        action = events_pb2.AdminAction(
            actor=actor,
            verb=verb,
            selector=selector.to_proto(),
            affected=affected,
            decision_id=decision_id,
            dsn_requested=dsn,
        )
        self._events.emit(events_pb2.LifecycleEvent(queue_id=selector.queue_id, admin_action=action))


__all__ = ["AdminOps"]
