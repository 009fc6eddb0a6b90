"""The SMTP transaction decisions: who may send, to whom, and queueing the message.

aiosmtpd calls these hooks (docs/handlers.rst); per-connection state lives on its
`Session`, per-transaction state on its `Envelope`. A message is answered
`250 2.0.0 Ok: queued as <id>` only after the broker confirmed the publish; if it
did not, the client gets `451 4.3.0` and retries (ARCHITECTURE.md, "No confirm, no 250").

Relay is granted by authentication or by the relay networks (policy.py). An
authenticated user may only use its own sender identities, in the envelope at MAIL
and in the author headers at DATA (sender_identity.py). AUTH PLAIN and LOGIN come
from `AuthMechanisms` (auth.py).

Once the broker confirmed the AcceptedMessage, a `received` lifecycle event is recorded on
the `events` stream (a bounded wait for its confirm) before the `250`, never before the
confirm: the record of a queued message is there before its client could retry it. A
message with a Message-ID is first looked up by its dedup key (dedup_key.py) in the
tracker, within KUBEMTA_DUPLICATE_WINDOW: a client's retry of a message already queued gets
`250` with the first queue id and is not queued again (a `duplicate` event says so). When
the tracker does not know (unreachable, slow, not configured) the message is queued.
"""

import logging
import re
import time
from datetime import UTC, datetime

from aiosmtpd.smtp import SMTP, Envelope, Session

from kubemta.v1 import events_pb2, message_pb2
from kubemta_common.amqp import stages
from kubemta_common.amqp.publisher import BusPublisher
from kubemta_common.bus_messages import Encoded, encoded_with_field
from kubemta_common.errors import MessageTooLarge, PublishFailed
from kubemta_common.events.emitter import EventSink, NoEvents
from kubemta_common.events.tracker_client import FirstQueueIds
from kubemta_common.logs import message_context, sanitize
from kubemta_common.metrics import DUPLICATES
from kubemta_common.queue_id import new_queue_id
from kubemta_ingress import metrics, replies
from kubemta_ingress.auth import AuthMechanisms
from kubemta_ingress.content import content_problem, received_count, refusal
from kubemta_ingress.dedup_key import dedup_key
from kubemta_ingress.listeners import session_listener
from kubemta_ingress.message_id import event_headers, message_id
from kubemta_ingress.policy import AddressProblem, RelayPolicy, check_address, client_ip
from kubemta_ingress.received import protocol_name, received_header
from kubemta_ingress.recipient_verify import RecipientVerifier
from kubemta_ingress.rejections import Reason, record_rejection
from kubemta_ingress.sender_identity import AuthenticatedUser, HeaderProblem, author_problem
from kubemta_ingress.submission_headers import with_missing_headers

MAX_HOPS_DEFAULT = 100  # RFC 5321 section 6.3: a loop limit SHOULD be at least 100 Received: headers
POSTMASTER = "postmaster"  # RFC 5321 section 4.5.1; bare, it means this system's: postmaster@KUBEMTA_HOSTNAME
logger = logging.getLogger(__name__)

QUEUE_ID = re.compile(r"[0-9A-Za-z]{1,64}")
"""What a queue id the tracker names may look like before it goes into a `250` reply (queue_id.py's are 16)."""
NULL_SENDER = "<>"  # how aiosmtpd passes MAIL FROM:<> (RFC 5321 section 4.5.5)

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


def client_label(session: Session) -> str:
    """The client's IP address for logs, or `unknown`."""
    address = client_ip(session.peer)
    return str(address) if address is not None else "unknown"


def text_field(value: str | None) -> str:
    """Client text made valid UTF-8 for a protobuf string (aiosmtpd keeps bad bytes as surrogates)."""
    return (value or "").encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def authenticated_user(session: Session) -> AuthenticatedUser | None:
    """The user an authenticated session belongs to; a session authenticated otherwise owns nothing."""
    if not session.authenticated:
        return None
    user = session.auth_data
    return user if isinstance(user, AuthenticatedUser) else AuthenticatedUser("unknown", ())


class IngressHandler(AuthMechanisms):
    """aiosmtpd handler: AUTH, relay policy, sender authorization and limits, content checks and queueing."""

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
    ) -> None:
        self._hostname = hostname
        self._events: EventSink = events if events is not None else NoEvents()
        self._tracker = tracker  # None: no duplicate check (KUBEMTA_TRACKER_URL empty)
        self._duplicate_window = duplicate_window  # seconds; 0: no duplicate check
        self._recipients = recipients  # None: every local part of a local domain is accepted
        self._max_hops = max_hops
        self._policy = policy
        self._max_recipients = max_recipients
        self._max_message_size = max_message_size
        self._publisher = publisher

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        return replies.ehlo_response(responses, self._max_message_size)

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, mail_options: list[str]
    ) -> str:
        if address != NULL_SENDER:
            problem = check_address(address, smtputf8=envelope.smtp_utf8)
            if problem is not None:
                reply = replies.NEEDS_SMTPUTF8 if problem is AddressProblem.NEEDS_SMTPUTF8 else replies.BAD_SENDER
                return self._reject(Reason.BAD_ADDRESS, reply, session, sender=text_field(address))
        user = authenticated_user(session)
        if user is not None and (address == NULL_SENDER or not user.owns(address)):
            reply = SENDER_NOT_OWNED.format(user=user.name)
            return self._reject(Reason.SENDER_NOT_OWNED, reply, session, sender=text_field(address), user=user.name)
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return replies.SENDER_OK

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        sender = text_field(envelope.mail_from)
        postmaster = address.lower() == POSTMASTER
        if postmaster:  # RFC 5321 section 4.5.1: <Postmaster> without a domain MUST be accepted
            address = f"{POSTMASTER}@{self._hostname}"
        problem = check_address(address, smtputf8=envelope.smtp_utf8)
        if problem is not None:
            reply = replies.NEEDS_SMTPUTF8 if problem is AddressProblem.NEEDS_SMTPUTF8 else replies.BAD_RECIPIENT
            return self._reject(Reason.BAD_ADDRESS, reply, session, sender=sender, recipient=text_field(address))
        if address in envelope.rcpt_tos:
            return replies.RECIPIENT_OK  # a duplicate is accepted once (as Postfix' cleanup does)
        if len(envelope.rcpt_tos) >= self._max_recipients:
            return self._reject(
                Reason.TOO_MANY_RECIPIENTS, replies.TOO_MANY_RECIPIENTS, session, sender=sender, recipient=address
            )
        client = client_ip(session.peer)
        if not postmaster and not self._policy.accepts(address, client, authenticated=bool(session.authenticated)):
            reply = replies.RELAY_DENIED.format(address=address)
            return self._reject(Reason.RELAY_DENIED, reply, session, sender=sender, recipient=address)
        if not postmaster and self._recipients is not None:  # local recipients, for trusted clients too
            refusal = await self._recipients.verify(address)
            if refusal is not None:
                return self._reject(refusal.reason, refusal.reply, session, sender=sender, recipient=address)
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return replies.RECIPIENT_OK

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        started = time.monotonic()
        try:
            return await self._queue(session, envelope)
        except Exception:
            logger.exception("failed to queue a message", extra={"client": client_label(session)})
            return self._reject(Reason.INTERNAL_ERROR, replies.INTERNAL_ERROR, session)
        finally:
            metrics.ACCEPT_DURATION.observe(time.monotonic() - started)

    async def handle_exception(self, error: Exception) -> str:
        logger.error("SMTP command failed: %r", error, exc_info=error)
        return replies.INTERNAL_ERROR

    async def _queue(self, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content
        assert content is not None, "aiosmtpd calls handle_DATA with the content read"
        sender = "" if envelope.mail_from == NULL_SENDER else text_field(envelope.mail_from)
        problem = content_problem(content)
        if problem is not None:
            reason, reply = refusal(problem)
            return self._reject(reason, reply, session, sender=sender)
        hops = received_count(content)
        if hops >= self._max_hops:  # with the Received header added here it would be one more than allowed
            reply = replies.TOO_MANY_HOPS.format(count=hops, limit=self._max_hops)
            return self._reject(Reason.MAIL_LOOP, reply, session, sender=sender, hops=hops)
        user = authenticated_user(session)
        author = author_problem(content, user) if user is not None else None
        if user is not None and author is not None:
            reason, reply = HEADER_REPLIES[author]
            return self._reject(reason, reply, session, sender=sender, user=user.name, problem=author.value)

        mid = message_id(content)
        key = dedup_key(mid, sender, envelope.rcpt_tos, content)
        first = await self._first_queue_id(key)
        if first is not None:
            with message_context(first):
                return await self._answer_retry(first, mid, sender, session, envelope)
        queue_id = new_queue_id()
        with message_context(queue_id):
            return await self._publish(queue_id, sender, session, envelope, content, mid, key)

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

    async def _answer_retry(self, first: str, mid: str, sender: str, session: Session, envelope: Envelope) -> str:
        """A retry of message `first`: `250` with its queue id, nothing queued, a `duplicate` event."""
        DUPLICATES.labels(stage="ingress").inc()
        event = events_pb2.LifecycleEvent(queue_id=first, message_id=mid)
        event.duplicate.first_queue_id = first
        event.duplicate.reason = "client-retry"
        event.duplicate.recipients.extend(envelope.rcpt_tos)
        self._events.emit(event)
        logger.debug(
            "client retry of a queued message answered with its queue id",
            extra={"sender": sanitize(sender), "message_id": sanitize(mid), "client": client_label(session)},
        )
        return replies.QUEUED.format(queue_id=first)

    async def _publish(
        self, queue_id: str, sender: str, session: Session, envelope: Envelope, content: bytes, mid: str, key: str
    ) -> str:
        """Publish the AcceptedMessage; record `received`; `250 ... queued as` only once the broker confirmed it."""
        head = self._accepted_head(queue_id, sender, session, envelope, mid, key)
        body, size = self._accepted_body(head, session, envelope, content)
        try:
            await self._publisher.publish(stages.INBOUND, body, message_id=queue_id)
        except PublishFailed as exc:
            return self._reject(
                Reason.QUEUE_UNAVAILABLE, replies.QUEUE_UNAVAILABLE, session, queue_id, sender=sender, error=str(exc)
            )
        except MessageTooLarge as exc:  # the broker's limit, lower than what this message needs on the bus
            return self._reject(
                Reason.MESSAGE_TOO_BIG, replies.TOO_BIG_FOR_QUEUE, session, queue_id, sender=sender, error=str(exc)
            )
        metrics.MESSAGES_RECEIVED.inc()
        metrics.MESSAGE_SIZE.observe(len(content))
        logger.info(
            "accepted",
            extra={
                "sender": sanitize(sender),
                "recipients": len(envelope.rcpt_tos),
                "size": len(content),
                "client": client_label(session),
                "helo": sanitize(session.host_name or ""),
                "message_id": sanitize(mid),
                "listener": head.listener,
            },
        )
        await self._events.record(received_event(head, size, content))  # False: the stream lags; mail goes on
        return replies.QUEUED.format(queue_id=queue_id)

    def _accepted_head(
        self, queue_id: str, sender: str, session: Session, envelope: Envelope, mid: str, key: str
    ) -> message_pb2.AcceptedMessage:
        """The AcceptedMessage without its content."""
        client = client_ip(session.peer)
        user = authenticated_user(session)
        listener = session_listener(session)
        head = message_pb2.AcceptedMessage(
            queue_id=queue_id,
            sender=sender,
            recipients=envelope.rcpt_tos,
            client_address=str(client) if client is not None else "",
            client_helo=text_field(session.host_name),
            smtputf8=envelope.smtp_utf8,
            trust=self.trust(session),
            authenticated_user=user.name if user is not None else "",
            message_id=mid,
            listener=listener.value if listener is not None else "",
            dedup_key=key,
        )
        head.arrival_time.FromDatetime(datetime.now(UTC))
        return head

    def _accepted_body(
        self, head: message_pb2.AcceptedMessage, session: Session, envelope: Envelope, content: bytes
    ) -> tuple[Encoded[message_pb2.AcceptedMessage], int]:
        """The serialised AcceptedMessage, the trace header and the content joined into it once (with_field), and
        the bytes of the message as queued."""
        arrival = head.arrival_time.ToDatetime(UTC)
        queue_id = head.queue_id
        client = client_ip(session.peer)
        protocol = protocol_name(
            extended=session.extended_smtp,
            smtputf8=envelope.smtp_utf8,
            tls=session.ssl is not None,
            authenticated=bool(session.authenticated),
        )
        trace = received_header(
            helo=session.host_name,
            client=client,
            hostname=self._hostname,
            protocol=protocol,
            queue_id=queue_id,
            recipients=envelope.rcpt_tos,
            when=arrival,
        )
        if head.trust != message_pb2.TRUST_UNTRUSTED:  # RFC 6409 section 8: the MSA completes what apps omit
            content = with_missing_headers(content, when=arrival, message_id=f"{queue_id}@{self._hostname}")
        parts = [trace, content]
        size = len(trace) + len(content)
        return encoded_with_field(head, message_pb2.AcceptedMessage.CONTENT_FIELD_NUMBER, parts), size

    def trust(self, session: Session) -> "message_pb2.Trust.ValueType":
        """The trust decision that travels with the message (only trusted mail is DKIM-signed).

        Authenticated: the session proved who it is, and `author_problem` refused any From: outside
        the user's identities. Relay network: KUBEMTA_RELAY_NETWORKS. Anyone else is untrusted,
        whatever the message claims to be from.
        """
        if session.authenticated:
            return message_pb2.TRUST_AUTHENTICATED
        if self._policy.may_relay(client_ip(session.peer)):
            return message_pb2.TRUST_RELAY_NETWORK
        return message_pb2.TRUST_UNTRUSTED

    def _reject(
        self, reason: Reason, reply: str, session: Session, queue_id: str | None = None, **fields: object
    ) -> str:
        client = client_label(session)
        record_rejection(reason, reply, client=client, helo=session.host_name, queue_id=queue_id, **fields)
        return reply


def received_event(head: message_pb2.AcceptedMessage, size: int, content: bytes) -> events_pb2.LifecycleEvent:
    """The `received` event of an accepted message: its envelope, client, trust, arrival, dedup key, listener,
    and the header block the client sent (at most 16 KiB); `size` is the bytes queued. Its time is the arrival:
    recorded only after the broker's confirm, it would otherwise come after the queue-manager's `queued`, which
    may be recorded within the confirm's round trip."""
    event = events_pb2.LifecycleEvent(queue_id=head.queue_id, message_id=head.message_id)
    event.time.CopyFrom(head.arrival_time)
    received = event.received
    received.sender = head.sender
    received.recipients.extend(head.recipients)
    received.size = size
    received.client_address = head.client_address
    received.client_helo = head.client_helo
    received.authenticated_user = head.authenticated_user
    received.trust = head.trust
    received.arrival_time.CopyFrom(head.arrival_time)
    received.headers = event_headers(content)
    received.dedup_key = head.dedup_key
    received.listener = head.listener
    return event
