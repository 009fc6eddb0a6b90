"""Accepting a message, whichever way it came: the checks and the queueing SMTP and the HTTP API share.

SMTP (handler.py) and `POST /v1/messages` (api_send.py) both go through `MailAcceptance`, so
a rule written here holds for both: one code path, not two.

- `sender_refusal`: the envelope sender's syntax (SMTPUTF8 only when declared), and for an
  authenticated sender (SMTP AUTH, API key, ServiceAccount) that it owns the address
  (`553 5.7.1`, as Postfix' reject_sender_login_mismatch); the null sender is for bounces.
- `recipient_refusal`: syntax, the recipient limit, the relay policy (policy.py: local
  domains, relay networks, authenticated clients) and local recipient verification.
- `queue`: the size limit, content rules (bare CR/LF, NUL, long lines), the hop count,
  author headers owned by an authenticated sender, a client's retry recognised by its dedup
  key, then the publish: the AcceptedMessage to `inbound`, or a message's one job straight to
  `deliver` when the resolver's answer for its domain is fresh (direct_jobs.py). `Queued` is
  returned only after the broker confirmed the message (ARCHITECTURE.md, "No confirm, no
  250": SMTP's `250` and the API's `202` are the same promise). The `received` lifecycle
  event is then emitted, not awaited (below), and for a direct job `queued` and `routed`.

The `received` event (what recognises a client's retry, by its dedup key, in the tracker) is handed
to the event log (`EventLog.emit`, published in the background) after the inbound confirm and before
the reply is written; it is on the `events` stream one stream confirm later (milliseconds). An ingress
that dies within that window loses the event: a client that got no reply retries and is queued again,
a duplicate, never a loss (at-least-once; awaiting the event before the reply had the same window).
New is only a retry that reaches the tracker within those milliseconds of its reply: queued again.

A `Refusal` is an SMTP reply with its enhanced status code (replies.py) and a rejection reason
(rejections.py); each transport records it with its own client details and answers it in its
own protocol (the API turns the code into an HTTP status: api_errors.py).
"""

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from kubemta.v1 import events_pb2, message_pb2
from kubemta_common.amqp import stages
from kubemta_common.amqp.publisher import BusPublisher
from kubemta_common.bus_messages import encoded_with_field
from kubemta_common.errors import MessageTooLarge, PublishFailed
from kubemta_common.events.emitter import EventSink, NoEvents
from kubemta_common.events.tracker_client import FirstQueueIds
from kubemta_common.logs import message_context, sanitize
from kubemta_common.metrics import DUPLICATES
from kubemta_common.queue_id import new_queue_id
from kubemta_common.timestamps import set_datetime
from kubemta_ingress import metrics, replies
from kubemta_ingress.content import content_problem, received_count, refusal
from kubemta_ingress.dedup_key import dedup_key
from kubemta_ingress.direct_jobs import DirectJobs, count_direct_job, direct_events
from kubemta_ingress.message_id import message_id
from kubemta_ingress.policy import AddressProblem, IPAddress, RelayPolicy, check_address, ip_text
from kubemta_ingress.received import received_header
from kubemta_ingress.received_event import received_event
from kubemta_ingress.recipient_verify import RecipientVerifier
from kubemta_ingress.rejections import Reason
from kubemta_ingress.sender_identity import AuthenticatedUser, HeaderProblem, author_problem
from kubemta_ingress.submission import Submission
from kubemta_ingress.submission_headers import with_missing_headers

logger = logging.getLogger(__name__)

MAX_HOPS_DEFAULT = 100  # RFC 5321 section 6.3: a loop limit SHOULD be at least 100 Received: headers
QUEUE_ID = re.compile(r"[0-9A-Za-z]{1,64}")
"""What a queue id the tracker names may look like before it goes into a reply (queue_id.py's are 16)."""

# Sender authorization replies (Postfix' reject_sender_login_mismatch wording; RFC 3463 5.7.1).
SENDER_NOT_OWNED = "553 5.7.1 Sender address rejected: not owned by user {user}"
FROM_NOT_OWNED = "550 5.7.1 From header not owned by user"
MULTIPLE_FROM = "550 5.7.1 Message has multiple From headers"
NO_FROM = "550 5.7.1 Message has no From header"
SENDER_HEADER_NOT_OWNED = "550 5.7.1 Sender header not owned by user"
MULTIPLE_SENDER = "550 5.7.1 Message has multiple Sender headers"
HEADER_REPLIES: dict[HeaderProblem, tuple[Reason, str]] = {
    HeaderProblem.NO_FROM: (Reason.FROM_NOT_OWNED, NO_FROM),
    HeaderProblem.MULTIPLE_FROM: (Reason.MULTIPLE_FROM, MULTIPLE_FROM),
    HeaderProblem.FROM_NOT_OWNED: (Reason.FROM_NOT_OWNED, FROM_NOT_OWNED),
    HeaderProblem.MULTIPLE_SENDER: (Reason.FROM_NOT_OWNED, MULTIPLE_SENDER),
    HeaderProblem.SENDER_NOT_OWNED: (Reason.FROM_NOT_OWNED, SENDER_HEADER_NOT_OWNED),
}
MESSAGE_TOO_BIG = "552 5.3.4 Error: message size exceeds the limit of {limit} bytes"  # RFC 3463 X.3.4


@dataclass(frozen=True, slots=True)
class Refusal:
    """A refused sender, recipient or message: the SMTP reply (with its enhanced code) and why, plus what the
    rejection's log line says about it (`fields`, client text already made safe by the caller)."""

    reason: Reason
    reply: str
    fields: Mapping[str, object] = field(default_factory=dict)
    queue_id: str | None = None
    maybe_queued: bool = False
    """The broker gave no answer, so the message may be queued all the same (a lost confirm): the client retries
    as after any 4xx, but an Idempotency-Key must keep holding the request (api_send.py)."""

    @property
    def code(self) -> int:
        """The basic reply code (451, 550, ...)."""
        return int(self.reply[:3])

    @property
    def status(self) -> str:
        """The RFC 3463 enhanced status code (`5.7.1`), or "" when the reply has none."""
        parts = self.reply.split(" ", 2)
        return parts[1] if len(parts) > 1 and replies.has_enhanced_code(self.reply) else ""


@dataclass(frozen=True, slots=True)
class Queued:
    """The message is on the bus (the broker confirmed it); `retry`: it was a client's retry of message
    `queue_id`, answered with that id and not queued again."""

    queue_id: str
    message_id: str
    retry: bool = False


class SuppressedRecipients(Protocol):
    """The cluster's suppression list as the ingress asks it (suppression_check.py: a tracker, cached, failing
    open): a Refusal for each suppressed recipient, keyed as given."""

    async def refusal(self, recipients: Sequence[str]) -> dict[str, Refusal]: ...


class MailAcceptance:
    """The checks and the queueing of every accepted message; one per ingress process, shared by the SMTP
    listeners and the HTTP API."""

    def __init__(
        self,
        *,
        hostname: str,
        policy: RelayPolicy,
        max_recipients: int,
        max_message_size: int,
        publisher: BusPublisher,
        max_hops: int = MAX_HOPS_DEFAULT,
        recipients: RecipientVerifier | None = None,
        events: EventSink | None = None,
        tracker: FirstQueueIds | None = None,
        duplicate_window: float = 0.0,
        suppressions: SuppressedRecipients | None = None,
        direct: DirectJobs | None = None,
    ) -> None:
        self.hostname = hostname
        self.policy = policy
        self.max_recipients = max_recipients
        self.max_message_size = max_message_size
        self._publisher = publisher
        self._max_hops = max_hops
        self._recipients = recipients  # None: every local part of a local domain is accepted
        self._events: EventSink = events if events is not None else NoEvents()
        self._tracker = tracker  # None: no duplicate check (KUBEMTA_TRACKER_URL empty)
        self._duplicate_window = duplicate_window  # seconds; 0: no duplicate check
        self._suppressions = suppressions  # None: no suppression check (KUBEMTA_SUPPRESSION_CHECK off, no tracker)
        self._direct = direct  # None: every message goes to `inbound` (KUBEMTA_ROUTE_SHORTCUT off)

    def sender_refusal(self, address: str, user: AuthenticatedUser | None, *, smtputf8: bool) -> Refusal | None:
        """None when `address` ("" = the null sender) may be the envelope sender of this client."""
        if address:
            problem = check_address(address, smtputf8=smtputf8)
            if problem is not None:
                reply = replies.NEEDS_SMTPUTF8 if problem is AddressProblem.NEEDS_SMTPUTF8 else replies.BAD_SENDER
                return Refusal(Reason.BAD_ADDRESS, reply, {"sender": address})
        if user is not None and (not address or not user.owns(address)):
            reply = SENDER_NOT_OWNED.format(user=user.name)
            return Refusal(Reason.SENDER_NOT_OWNED, reply, {"sender": address, "user": user.name})
        return None

    async def recipient_refusal(
        self,
        address: str,
        accepted: Sequence[str],
        *,
        sender: str,
        client: IPAddress | None,
        authenticated: bool,
        smtputf8: bool,
        postmaster: bool = False,
        check_suppression: bool = True,
    ) -> Refusal | None:
        """None when `address` may be added to the `accepted` recipients; `postmaster`: the bare <Postmaster>
        of RFC 5321 section 4.5.1, which is accepted from anyone. `check_suppression` False: the caller asks
        `suppression_refusals` for all its recipients at once (the API)."""
        problem = check_address(address, smtputf8=smtputf8)
        if problem is not None:
            reply = replies.NEEDS_SMTPUTF8 if problem is AddressProblem.NEEDS_SMTPUTF8 else replies.BAD_RECIPIENT
            return Refusal(Reason.BAD_ADDRESS, reply, {"sender": sender, "recipient": address})
        if len(accepted) >= self.max_recipients:
            return Refusal(
                Reason.TOO_MANY_RECIPIENTS, replies.TOO_MANY_RECIPIENTS, {"sender": sender, "recipient": address}
            )
        if postmaster:
            return None
        if not self.policy.accepts(address, client, authenticated=authenticated):
            reply = replies.RELAY_DENIED.format(address=address)
            return Refusal(Reason.RELAY_DENIED, reply, {"sender": sender, "recipient": address})
        if self._recipients is not None:  # local recipients, for trusted clients too
            verdict = await self._recipients.verify(address)
            if verdict is not None:
                return Refusal(verdict.reason, verdict.reply, {"sender": sender, "recipient": address})
        if check_suppression and (authenticated or self.policy.may_relay(client)):
            return (await self.suppression_refusals([address])).get(address)
        return None

    async def suppression_refusals(self, recipients: Sequence[str]) -> dict[str, Refusal]:
        """The suppressed ones among `recipients` of an outbound sender (authenticated, or a relay-network
        client: mail from the internet to local mailboxes is not checked), with their refusals; none without a
        suppression list or when no tracker answered in time (a suppression list protects the senders'
        reputation; it never stops mail)."""
        if self._suppressions is None or not recipients:
            return {}
        return await self._suppressions.refusal(recipients)

    async def queue(self, submission: Submission) -> Queued | Refusal:
        """Check the message and queue it: `Queued` once the broker confirmed it, else why not."""
        content = submission.content
        sender = submission.sender
        if len(content) > self.max_message_size:  # SMTP's DATA stops earlier; the API composes first
            reply = MESSAGE_TOO_BIG.format(limit=self.max_message_size)
            return Refusal(Reason.MESSAGE_TOO_BIG, reply, {"sender": sender, "size": len(content)})
        problem = content_problem(content)
        if problem is not None:
            reason, reply = refusal(problem)
            return Refusal(reason, reply, {"sender": sender})
        hops = received_count(content)
        if hops >= self._max_hops:  # with the Received header added here it would be one more than allowed
            reply = replies.TOO_MANY_HOPS.format(count=hops, limit=self._max_hops)
            return Refusal(Reason.MAIL_LOOP, reply, {"sender": sender, "hops": hops})
        user = submission.user
        author = author_problem(content, user) if user is not None else None
        if user is not None and author is not None:
            reason, reply = HEADER_REPLIES[author]
            return Refusal(reason, reply, {"sender": sender, "user": user.name, "problem": author.value})

        mid = message_id(content)
        key = submission.dedup_key
        if key is None:
            key = dedup_key(mid, sender, list(submission.recipients), content)
            first = await self._first_queue_id(key)
            if first is not None:
                with message_context(first):
                    return self._answer_retry(first, mid, submission)
        queue_id = new_queue_id()
        with message_context(queue_id):
            return await self._publish(queue_id, submission, mid, key)

    async def _first_queue_id(self, key: str) -> str | None:
        """The queue id of the message this one is a client's retry of, None when it is not one (or unknown)."""
        if not key or self._tracker is None or self._duplicate_window <= 0:
            return None
        first = await self._tracker.first_queue_id(key, self._duplicate_window)
        if not isinstance(first, str) or not first:
            return None
        if not QUEUE_ID.fullmatch(first):  # it goes into a reply line: never the tracker's text as it is
            logger.warning("the tracker answered a duplicate check with %r, not a queue id: queueing", first[:64])
            return None
        return first

    def _answer_retry(self, first: str, mid: str, submission: Submission) -> Queued:
        """A retry of message `first`: its queue id, nothing queued, a `duplicate` event."""
        DUPLICATES.labels(stage="ingress").inc()
        event = events_pb2.LifecycleEvent(queue_id=first, message_id=mid)
        event.duplicate.first_queue_id = first
        event.duplicate.reason = "client-retry"
        event.duplicate.recipients.extend(submission.recipients)
        self._events.emit(event)
        logger.debug(
            "client retry of a queued message answered with its queue id",
            extra={
                "sender": sanitize(submission.sender),
                "message_id": sanitize(mid),
                "client": submission.client_label,
            },
        )
        return Queued(first, mid, retry=True)

    async def _publish(self, queue_id: str, submission: Submission, mid: str, key: str) -> Queued | Refusal:
        """Publish the AcceptedMessage to `inbound`, or its one job to `deliver` (direct_jobs.py), and emit
        `received` (and for a job `queued` and `routed`); `Queued` only once the broker confirmed the message (the
        events' own confirms are not awaited: the module's docstring says what that leaves open)."""
        arrival = datetime.now(UTC)
        head = self._accepted_head(queue_id, submission, mid, key, arrival)
        parts = self._content_parts(head, submission, arrival)
        size = sum(len(part) for part in parts)
        job = await self._direct.job(head) if self._direct is not None else None
        follow_up = direct_events(head, job) if job is not None else []  # timed before the publish
        sender = submission.sender
        try:
            if job is None:
                body = encoded_with_field(head, message_pb2.AcceptedMessage.CONTENT_FIELD_NUMBER, parts)
                await self._publisher.publish(stages.INBOUND, body, message_id=queue_id)
            else:
                encoded = encoded_with_field(job, message_pb2.DeliveryJob.CONTENT_FIELD_NUMBER, parts)
                await self._publisher.publish(stages.DELIVER, encoded, message_id=job.job_id)
        except PublishFailed as exc:
            fields = {"sender": sender, "error": str(exc)}
            return Refusal(
                Reason.QUEUE_UNAVAILABLE, replies.QUEUE_UNAVAILABLE, fields, queue_id, maybe_queued=exc.maybe_published
            )
        except MessageTooLarge as exc:  # the broker's limit, lower than what this message needs on the bus
            fields = {"sender": sender, "error": str(exc)}
            return Refusal(Reason.MESSAGE_TOO_BIG, replies.TOO_BIG_FOR_QUEUE, fields, queue_id)
        metrics.MESSAGES_RECEIVED.inc()
        metrics.MESSAGE_SIZE.observe(len(submission.content))
        # Its `event=received` log line says who sent what to whom, from where: no separate `accepted` line.
        self._events.emit(received_event(head, size, submission.content))
        for event in follow_up:
            self._events.emit(event)
        if job is not None:
            count_direct_job()
        return Queued(queue_id, head.message_id)

    def _accepted_head(
        self, queue_id: str, submission: Submission, mid: str, key: str, arrival: datetime
    ) -> message_pb2.AcceptedMessage:
        """The AcceptedMessage without its content."""
        client = submission.client
        user = submission.user
        head = message_pb2.AcceptedMessage(
            queue_id=queue_id,
            sender=submission.sender,
            recipients=submission.recipients,
            client_address=ip_text(client) if client is not None else "",
            client_helo=text_field(submission.helo),
            smtputf8=submission.smtputf8,
            trust=submission.trust,
            authenticated_user=user.name if user is not None else "",
            message_id=mid,
            listener=submission.listener,
            dedup_key=key,
            tags=submission.tags,
            envid=submission.envid,
            ret=submission.ret,
        )
        for recipient in submission.recipients:
            dsn = submission.recipient_dsn.get(recipient)
            if dsn is not None:
                head.recipient_dsn[recipient].CopyFrom(dsn)
        set_datetime(head.arrival_time, arrival)
        return head

    def _content_parts(
        self, head: message_pb2.AcceptedMessage, submission: Submission, arrival: datetime
    ) -> list[bytes]:
        """The message as queued, in parts joined once into the bus message (with_field): the trace header and the
        content (with the headers an MSA adds to trusted mail); `arrival` is the head's arrival_time."""
        content = submission.content
        trace = received_header(
            helo=submission.helo,
            client=submission.client,
            hostname=self.hostname,
            protocol=submission.protocol,
            queue_id=head.queue_id,
            recipients=list(submission.recipients),
            when=arrival,
        )
        if head.trust != message_pb2.TRUST_UNTRUSTED:  # RFC 6409 section 8: the MSA completes what apps omit
            content = with_missing_headers(content, when=arrival, message_id=f"{head.queue_id}@{self.hostname}")
            if not head.message_id:  # the one just added travels with the message and answers the client
                head.message_id = message_id(content)
        return [trace, content]


def text_field(value: str | None) -> str:
    """Client text made valid UTF-8 for a protobuf string (aiosmtpd keeps bad bytes as surrogates)."""
    return (value or "").encode("utf-8", "surrogateescape").decode("utf-8", "replace")
