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
  "deleted by the administrator") goes to `results` first so the queue-manager bounces it. Mail
  elsewhere in the pipeline is deleted by its owner, through the decision.

How a queue is scanned (`_scan`): on a channel of its own, the queue's message count is read
(passive declare) and at most that many messages are fetched with basic.get, without
auto-ack. Every fetched message stays unacknowledged until the end of the scan, so none is
fetched twice; only its delivery tag is kept (the body is dropped after the decision, so a scan
of a long queue holds one body at a time). A message that is moved is acknowledged right after
its copy was confirmed; the others are returned with basic.reject (requeue) at the end, and a
failure in between (a publish not confirmed, a lost connection) stops the scan: the broker
returns every unacknowledged message when the channel closes, so the worst case is a message
both moved and still in place (at least once), never one in neither. A body that does not
decode is left where it is and logged.

RabbitMQ versions (3.10+ and 4.x; tests/test_admin_ops.py checks each point on the broker at hand,
3.10.8 on the development machines):
- a returned message keeps its TTL in the retry queue: a quorum queue's message TTL counts from
  when the message was enqueued, and a return does not enqueue it anew, so a job the flush
  passed over still comes back to `route` (dead-lettered as expired) when its delay is over;
- every return counts as a delivery attempt towards a quorum queue's delivery limit, with
  basic.reject on every version (basic.nack stopped counting in 4.3, which would be kinder to
  the retry queues but differ between versions). The retry queues declare no limit: on 3.x
  they have none; on 4.x the default (20) applies and a retry job passed over by 20 scans is
  dead-lettered to its target, `route`: an early retry, never a loss. `held` has no limit on
  3.x and `x-delivery-limit: -1` (none) on 4.x (topology.py); a `held` declared before an
  upgrade to 4.x keeps the default of 20 with no dead-letter target, which the services log
  as an error together with the policy that fixes it;
- basic.get works on quorum queues on both (slower than a consumer: one round trip per
  message, so a scan of 100,000 messages takes tens of seconds, and the HTTP request as long).
"""

import asyncio
import logging
import re
import secrets
import unicodedata
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage
from google.protobuf.message import DecodeError

from kubemta.v1 import events_pb2, message_pb2
from kubemta_common.amqp import stages
from kubemta_common.amqp.broker import Broker
from kubemta_common.amqp.held import JOB_TYPE, hold_job, release_target
from kubemta_common.amqp.publisher import Publisher
from kubemta_common.amqp.streams import DECISIONS
from kubemta_common.amqp.topology import DSN, HELD, ROUTE, STAGE_QUEUES, large, retry_queue_name
from kubemta_common.errors import MessageTooLarge, PublishFailed, TransientError
from kubemta_common.events.decisions import normal_domain, normal_sender
from kubemta_common.events.emitter import EventSink
from kubemta_common.timestamps import now_timestamp

logger = logging.getLogger(__name__)

DECISION_TYPE = events_pb2.AdminDecision.DESCRIPTOR.full_name
DELETED_STATUS = "5.3.0"
"""RFC 3463 §3.4 X.3.0: other or undefined mail system status (the administrator removed it)."""
DELETED_DIAGNOSTIC = "deleted by the administrator"
RELEASE_TARGETS = frozenset((*STAGE_QUEUES, DSN))
"""Where a release may send a held message back to: the queues that dead-letter to `held`."""

MAX_QUEUE_ID = 64
MAX_SENDER = 256
"""RFC 5321 §4.5.3.1.3: a reverse-path is at most 256 octets."""
MAX_DOMAIN = 255
"""RFC 5321 §4.5.3.1.2: a domain is at most 255 octets."""
_QUEUE_ID = re.compile(r"[A-Za-z0-9._-]+\Z")
_FORBIDDEN = re.compile(r"[\x00-\x20\x7f-\x9f<>\"\\,;]")
"""Control characters (C0, C1, DEL), space, and what cannot be part of an address outside quotes."""
_DOMAIN_FORBIDDEN = re.compile(r"[\x00-\x20\x7f-\x9f<>\"\\,;@()]")


def _checked_bytes(text: str) -> int:
    """Bytes of `text` in UTF-8; ValueError for text that has none (a lone surrogate, e.g. JSON's "\\ud800") or
    that holds a separator, control, format or unassigned character (Unicode Z* and C*: U+2028, U+202E, U+FEFF...),
    which no address needs and which would disguise a log line."""
    try:
        length = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValueError("not valid Unicode text") from None
    if any(unicodedata.category(char)[0] in "ZC" for char in text):
        raise ValueError("no spaces, separators, control or format characters")
    return length


class BrokerUnavailable(TransientError):
    """The broker is not reachable: the command did nothing (the API answers 503)."""


@dataclass(frozen=True, slots=True)
class Selector:
    """Which messages a command applies to: one of queue_id, sender, domain, or all (an events.proto Selector).

    It matches as the services' `Decisions` view does (kubemta_common.events.decisions: senders and domains
    compared in their normal form, a domain also without a trailing dot and in IDNA), so what a command moves
    right away and what the message owners honour later are the same mail."""

    queue_id: str = ""
    sender: str = ""
    """Envelope sender, compared case-insensitively; "<>" is the null sender."""
    domain: str = ""
    """Destination domain of a job, compared case-insensitively."""
    all: bool = False

    @classmethod
    def parse(
        cls,
        *,
        queue_id: str | None = None,
        sender: str | None = None,
        domain: str | None = None,
        all: bool = False,
        allow_all: bool = False,
    ) -> "Selector":
        """A validated selector; ValueError unless exactly one of queue_id, sender, domain (or `all`, when allowed)
        is given, well-formed."""
        given = [name for name, value in (("queue_id", queue_id), ("sender", sender), ("domain", domain)) if value]
        if all:
            if not allow_all:
                raise ValueError("this command does not take all")
            if given:
                raise ValueError("all takes no queue_id, sender or domain")
            return cls(all=True)
        if len(given) != 1:
            choices = "queue_id, sender, domain" + (" or all" if allow_all else "")
            raise ValueError(f"give exactly one of {choices}")
        if queue_id:
            if len(queue_id) > MAX_QUEUE_ID or not _QUEUE_ID.match(queue_id):
                raise ValueError(f"a queue id is 1-{MAX_QUEUE_ID} letters, digits and . _ -")
            return cls(queue_id=queue_id)
        if sender:
            if _checked_bytes(sender) > MAX_SENDER:
                raise ValueError(f"a sender is at most {MAX_SENDER} bytes of UTF-8")
            local, _, host = sender.rpartition("@")
            if sender != "<>" and (_FORBIDDEN.search(sender) or not local or not host):
                raise ValueError("a sender is an address (local@domain, no spaces, quotes or control characters) or <>")
            return cls(sender=sender)
        assert domain
        if _checked_bytes(domain) > MAX_DOMAIN or _DOMAIN_FORBIDDEN.search(domain) or not normal_domain(domain):
            raise ValueError(
                f"a domain is at most {MAX_DOMAIN} bytes of UTF-8, without spaces, control characters or @"
            )
        return cls(domain=domain)

    def to_proto(self) -> events_pb2.Selector:
        """The selector as events.proto's Selector."""
        return events_pb2.Selector(queue_id=self.queue_id, sender=self.sender, domain=self.domain, all=self.all)

    def matches(self, facts: "Facts | None") -> bool:
        """True when the message `facts` describes is one this selector names (an unreadable one: only `all`)."""
        if self.all:
            return True
        if facts is None:
            return False
        if self.queue_id:
            return facts.queue_id == self.queue_id
        if self.sender:
            return normal_sender(facts.sender) == normal_sender(self.sender)
        return normal_domain(self.domain) in {normal_domain(domain) for domain in facts.domains}

    def describe(self) -> str:
        """For log lines: `domain='example.com'`, or `all`."""
        if self.all:
            return "all"
        name, value = (
            next((name, value) for name, value in (("queue_id", self.queue_id), ("sender", self.sender)) if value)
            if (self.queue_id or self.sender)
            else ("domain", self.domain)
        )
        return f"{name}={value!r}"


ALL = Selector(all=True)


@dataclass(frozen=True, slots=True)
class Facts:
    """What the selector and the events need to know of one queued message."""

    queue_id: str
    sender: str
    domains: tuple[str, ...]
    job_id: str = ""
    message_id: str = ""
    attempt: int = 0
    recipients: tuple[str, ...] = ()
    job: message_pb2.DeliveryJob | None = field(default=None, compare=False)
    """The delivery job when the message is one (or a result carrying one): what a deletion's DSN needs."""


def _job_facts(job: message_pb2.DeliveryJob) -> Facts:
    return Facts(
        queue_id=job.queue_id,
        sender=job.sender,
        domains=(job.domain,),
        job_id=job.job_id,
        message_id=job.message_id,
        attempt=job.attempts,
        recipients=tuple(job.recipients),
        job=job,
    )


def facts_of(message_type: str | None, body: bytes) -> Facts | None:
    """The facts of a bus message of AMQP `type` `message_type`; None when the type is unknown or the body does not
    decode as it."""
    try:
        if message_type == JOB_TYPE:
            return _job_facts(message_pb2.DeliveryJob.FromString(body))
        if message_type == message_pb2.DeliveryResult.DESCRIPTOR.full_name:
            return _job_facts(message_pb2.DeliveryResult.FromString(body).job)
        if message_type == message_pb2.AcceptedMessage.DESCRIPTOR.full_name:
            accepted = message_pb2.AcceptedMessage.FromString(body)
            domains = tuple(dict.fromkeys(rcpt.rpartition("@")[2] for rcpt in accepted.recipients))
            return Facts(
                accepted.queue_id,
                accepted.sender,
                domains,
                message_id=accepted.message_id,
                recipients=tuple(accepted.recipients),
            )
        if message_type == message_pb2.DsnRequest.DESCRIPTOR.full_name:
            request = message_pb2.DsnRequest.FromString(body)
            return Facts(request.queue_id, request.sender, (), job_id=request.job_id)
    except DecodeError:
        return None
    return None


def deletion_result(job: message_pb2.DeliveryJob) -> message_pb2.DeliveryResult:
    """The permanent failure of every recipient of a deleted job, so the queue-manager bounces it (a DSN)."""
    return message_pb2.DeliveryResult(
        job=job,
        recipients=[
            message_pb2.RecipientResult(
                recipient=recipient,
                outcome=message_pb2.OUTCOME_PERMANENT,
                status=DELETED_STATUS,
                diagnostic=DELETED_DIAGNOSTIC,
            )
            for recipient in job.recipients
        ],
        attempted_at=now_timestamp(),
        reporter="tracker",
    )


Take = Callable[[AbstractIncomingMessage], Awaitable[bool]]
"""Decides about one fetched message: True when its copy went elsewhere (confirmed) and it is to be acknowledged."""


class AdminOps:
    """The queue administration commands of the tracker API (admin_api.py)."""

    def __init__(
        self, broker: Broker, publisher: Publisher, events: EventSink, *, retry_delays: Iterable[float], timeout: float
    ) -> None:
        self._broker = broker
        self._publisher = publisher
        self._events = events
        self._retry = tuple(retry_queue_name(delay) for delay in sorted(set(retry_delays)))
        self._timeout = timeout
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
                    moved += await self._scan(queue, to(target))
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
                    moved += await self._scan(queue, take)
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
            await self._publisher.publish_raw(
                target,
                message.body,
                message_id=message.message_id or (facts.job_id if facts else ""),
                message_type=message.type or "",
            )
            event = self._event(facts)
            event.released.CopyFrom(events_pb2.Released(released_to=target, actor=actor))
            self._events.emit(event)
            return True

        async with self._lock:
            try:
                moved = await self._scan(HELD, take)
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
                await self._publisher.publish(stages.RESULTS, deletion_result(facts.job), message_id=facts.job_id)
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
                moved = await self._scan(HELD, take)
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

    async def _channel(self) -> AbstractChannel:
        if not self._broker.connected:
            raise BrokerUnavailable("the broker is not reachable")
        try:
            async with asyncio.timeout(self._timeout):
                return await self._broker.consumer_channel(prefetch=1)
        except (TimeoutError, aiormq.exceptions.AMQPError, aio_pika.exceptions.AMQPError, ConnectionError) as exc:
            raise BrokerUnavailable(f"no channel to the broker: {exc!r}") from None

    async def _scan(self, queue: str, take: Take) -> int:
        """Offer each message `queue` held at the start to `take` once; acknowledge those it took (see the module
        docstring); how many it took."""
        channel = await self._channel()
        kept: list[int] = []
        moved = 0
        try:
            try:
                declared = await channel.declare_queue(queue, passive=True)
            except aiormq.exceptions.ChannelNotFoundEntity:
                logger.warning("queue %s does not exist; skipped", queue)
                return 0
            assert declared.declaration_result.message_count is not None
            for _ in range(declared.declaration_result.message_count):
                message = await declared.get(no_ack=False, fail=False, timeout=self._timeout)
                if message is None:
                    break
                assert message.delivery_tag is not None
                try:
                    took = await take(message)
                except MessageTooLarge as exc:
                    logger.warning("message %s on %s left where it is: %s", message.message_id, queue, exc)
                    took = False
                except BaseException:
                    kept.append(message.delivery_tag)
                    raise
                if took:
                    await message.ack()
                    moved += 1
                else:
                    kept.append(message.delivery_tag)
        except (aiormq.exceptions.AMQPError, aio_pika.exceptions.AMQPError, ConnectionError, TimeoutError) as exc:
            raise BrokerUnavailable(f"scanning {queue} failed after {moved} moved: {exc!r}") from None
        finally:
            await self._return(channel, kept)
        return moved

    @staticmethod
    async def _return(channel: AbstractChannel, tags: list[int]) -> None:
        """Reject (requeue) what was kept, then close the channel (which returns anything still unacknowledged)."""
        try:
            if tags and not channel.is_closed:
                underlay = await channel.get_underlay_channel()
                for tag in tags:
                    await underlay.basic_reject(tag, requeue=True)
        except (aiormq.exceptions.AMQPError, aio_pika.exceptions.AMQPError, ConnectionError) as exc:
            logger.warning(
                "returning %d messages failed (the broker returns them as the channel closes): %r", len(tags), exc
            )
        finally:
            if not channel.is_closed:
                await channel.close()

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


__all__ = ["ALL", "AdminOps", "BrokerUnavailable", "Facts", "PublishFailed", "Selector", "deletion_result", "facts_of"]
