"""`POST /v1/messages`: apps send mail over HTTP, through the same decisions as SMTP.

    POST /v1/messages  Content-Type: application/json   (MessageRequest: from, to, cc, bcc, subject, text,
                                                         html, attachments, headers, tags; api_message.py)
    POST /v1/messages?from=a@x&to=b@y  Content-Type: message/rfc822   (a raw RFC 5322 message)

    Delivery status notifications (RFC 3461, api_dsn.py): JSON `"dsn": {"notify", "ret", "envid"}`;
    raw, the query parameters `notify=success,delay`, `ret=hdrs`, `envid=...`.

    202 {"queue_id", "message_id", "recipients"}  only once the broker confirmed the message (SMTP's 250);
    401 no or an unknown credential; 403 a credential without sender identities, or a sender or From:
        outside them; 409 the same Idempotency-Key is still being answered; 413 over the size limit;
    415 another Content-Type; 422 invalid input, naming the field (or the refused recipients);
    503 + Retry-After: the broker, the tracker (for an Idempotency-Key) or a recipient check is
        unavailable now.

The caller is a `Principal` (api_auth.py): an API key, a Kubernetes ServiceAccount token, never
the operator's token (it owns no sender). Its identities are an authenticated SMTP user's, and
`MailAcceptance` (acceptance.py) makes every check SMTP makes: the sender and each recipient as
at MAIL and RCPT, then the size, content rules, hop count, author headers and the publish.
The message is trusted (TRUST_AUTHENTICATED), so it is DKIM-signed like authenticated SMTP mail.
A message goes to all its recipients or to none: one refused recipient refuses the request.

`Idempotency-Key` (draft-ietf-httpapi-idempotency-key-header): a repeat within
KUBEMTA_IDEMPOTENCY_WINDOW, on any replica, gets the first answer (`Idempotent-Replayed: true`)
and queues nothing; while the first is in flight, 409; with another request body, 422
(idempotency.py, decided by the tracker in the order of the events stream). When the broker did not
answer (a lost confirm: the message may be queued), the claim is not released: a retry gets the
first answer once the message shows up in the tracker, 409 until then, and goes ahead once the
claim went stale (the tracker's KUBEMTA_IDEMPOTENCY_CLAIM_TTL, 60 s) without it showing up.
"""

import ipaddress
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from kubemta.v1 import message_pb2
from kubemta_ingress import metrics
from kubemta_ingress.acceptance import MailAcceptance, Queued, Refusal
from kubemta_ingress.api_auth import BearerAuth, Principal
from kubemta_ingress.api_errors import RETRY_AFTER, problem, recipients_response, refusal_response
from kubemta_ingress.api_message import ComposedMessage
from kubemta_ingress.api_request_message import (
    JSON,
    RFC822,
    DsnQuery,
    MessageBuilder,
    PostedMessage,
    UnsupportedMediaType,
)
from kubemta_ingress.idempotency import (
    Conflict,
    Idempotency,
    IdempotencyKey,
    InvalidIdempotencyKey,
    Proceed,
    Replay,
    key_hash,
    request_fingerprint,
)
from kubemta_ingress.policy import IPAddress
from kubemta_ingress.rejections import record_rejection
from kubemta_ingress.submission import Submission

logger = logging.getLogger(__name__)

LISTENER = "api"
"""The `listener` of messages sent through the API (the `received` event and its log line)."""
PROTOCOL = "HTTP"
"""The `with` clause of their Received: header."""


class QueuedAnswer(BaseModel):
    """The 202 answer: the message is queued (the broker confirmed it)."""

    queue_id: str = Field(description="kubemta's queue id: `kubemta-admin queue show <id>`, webhooks, logs")
    message_id: str = Field(description="The message's Message-ID header (generated unless the request set one)")
    recipients: int = Field(description="Recipients the message was queued for")


@dataclass(frozen=True, slots=True)
class Refused:
    """Recipients refused at their RCPT-equivalent check."""

    recipients: Sequence[tuple[str, Refusal]]


class SendingApi:
    """The sending route's work: compose or parse (api_request_message.py), check, claim the Idempotency-Key, queue."""

    def __init__(self, acceptance: MailAcceptance, idempotency: Idempotency | None) -> None:
        self._acceptance = acceptance
        self._idempotency = idempotency  # None: no tracker configured; an Idempotency-Key gets 503
        self._builder = MessageBuilder(acceptance.max_recipients)

    async def send(
        self,
        request: Request,
        principal: Principal,
        idempotency_key: str | None,
        envelope_from: str | None,
        envelope_to: list[str] | None,
        dsn_query: DsnQuery = (None, None, None),
    ) -> JSONResponse:
        """The answer to one POST /v1/messages; `dsn_query`: a raw message's `notify`, `ret` and `envid`."""
        if not principal.identities:
            metrics.API_MESSAGES.labels(result="forbidden").inc()
            return problem(403, f"{principal.name} may not send mail: it has no sender identities")
        body = await request.body()
        media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        client = client_address(request)
        key: IdempotencyKey | None = None
        if idempotency_key is not None:
            try:
                key = IdempotencyKey.parse(idempotency_key)
            except InvalidIdempotencyKey as exc:
                metrics.API_MESSAGES.labels(result="invalid").inc()
                return problem(400, str(exc))
        # With a key, the Message-ID comes from it: a replay names the same Message-ID as the first answer.
        message_id = self._message_id(key_hash(principal.name, key) if key is not None else None)
        try:
            composed, tags, dsn = await self._builder.build(
                PostedMessage(media_type, body, envelope_from, envelope_to, message_id, dsn_query)
            )
        except UnsupportedMediaType:
            metrics.API_MESSAGES.labels(result="invalid").inc()
            return problem(415, f"Content-Type must be {JSON} or {RFC822}")
        refused = await self._check_envelope(composed, principal, client)
        if isinstance(refused, Refusal):
            return self._refuse(refused, client, principal)
        if isinstance(refused, Refused):
            for _, refusal in refused.recipients:
                self._record(refusal, client, principal)
            metrics.API_MESSAGES.labels(result="refused").inc()
            return recipients_response(refused.recipients)

        claim: Proceed | None = None
        if key is not None:
            fingerprint = request_fingerprint(request.method, path_and_query(request), media_type, body)
            begin = await self._begin(principal, key, fingerprint, composed)
            if isinstance(begin, JSONResponse):
                return begin
            claim = begin
        submission = Submission(
            sender=composed.sender,
            recipients=composed.recipients,
            content=composed.content,
            client=client,
            helo=None,
            user=principal.sender(),
            trust=message_pb2.TRUST_AUTHENTICATED,
            listener=LISTENER,
            protocol=PROTOCOL,
            smtputf8=composed.smtputf8,
            tags=tags,
            dedup_key=claim.dedup_key if claim is not None else None,
            recipient_dsn=dsn.recipient_dsn(composed.recipients),
            envid=dsn.envid,
            ret=dsn.ret,
        )
        started = time.monotonic()
        try:
            outcome = await self._acceptance.queue(submission)
        except BaseException:
            await self._abandon(claim)
            raise
        finally:
            metrics.API_ACCEPT_DURATION.observe(time.monotonic() - started)
        if isinstance(outcome, Refusal):
            if not outcome.maybe_queued:  # a lost confirm: the key stays held until it is done or goes stale
                await self._abandon(claim)
            return self._refuse(outcome, client, principal)
        metrics.API_MESSAGES.labels(result="duplicate" if outcome.retry else "queued").inc()
        return queued_response(outcome, len(composed.recipients))

    async def _abandon(self, claim: Proceed | None) -> None:
        """Release the Idempotency-Key claim of a request that queued nothing."""
        if claim is not None and self._idempotency is not None:
            await self._idempotency.abandon(claim)

    def _message_id(self, key: str | None) -> str:
        """The Message-ID of a composed message (RFC 5322 section 3.6.4: unique, the right side our host):
        random, or derived from the Idempotency-Key's hash so that every repeat of the request names the same."""
        left = key[:32] if key is not None else uuid.uuid4().hex
        return f"<{left}@{self._acceptance.hostname}>"

    async def _check_envelope(
        self, composed: ComposedMessage, principal: Principal, client: IPAddress | None
    ) -> Refusal | Refused | None:
        """The sender as at MAIL, then every recipient as at RCPT; None when all pass."""
        acceptance = self._acceptance
        refusal = acceptance.sender_refusal(composed.sender, principal.sender(), smtputf8=composed.smtputf8)
        if refusal is not None:
            return refusal
        accepted: list[str] = []
        refused: list[tuple[str, Refusal]] = []
        for recipient in composed.recipients:
            refusal = await acceptance.recipient_refusal(
                recipient,
                accepted,
                sender=composed.sender,
                client=client,
                authenticated=True,
                smtputf8=composed.smtputf8,
                check_suppression=False,
            )
            if refusal is None:
                accepted.append(recipient)
            else:
                refused.append((recipient, refusal))
        suppressed = await acceptance.suppression_refusals(accepted)
        refused.extend((recipient, suppressed[recipient]) for recipient in accepted if recipient in suppressed)
        return Refused(refused) if refused else None

    async def _begin(
        self, principal: Principal, key: IdempotencyKey, fingerprint: str, composed: ComposedMessage
    ) -> Proceed | JSONResponse:
        """Claim the Idempotency-Key: go ahead, or the answer to give instead."""
        if self._idempotency is None:
            metrics.API_MESSAGES.labels(result="unavailable").inc()
            detail = "an Idempotency-Key needs the tracker (KUBEMTA_TRACKER_URL), which is not configured"
            return problem(503, detail, retry_after=RETRY_AFTER)
        begin = await self._idempotency.begin(principal, key, fingerprint)
        if isinstance(begin, Proceed):
            return begin
        if isinstance(begin, Replay):
            metrics.API_MESSAGES.labels(result="replayed").inc()
            # a raw message without a Message-ID got the one the MSA adds: <first queue id@host> (acceptance.py)
            mid = composed.message_id or f"<{begin.queue_id}@{self._acceptance.hostname}>"
            answer = queued_response(Queued(begin.queue_id, mid), len(composed.recipients))
            answer.headers["Idempotent-Replayed"] = "true"
            return answer
        if isinstance(begin, Conflict):
            metrics.API_MESSAGES.labels(result="conflict").inc()
            if begin.status == 409:
                return problem(409, "a request with this Idempotency-Key is still in flight", retry_after=1)
            return problem(422, "this Idempotency-Key was used for a different request")
        metrics.API_MESSAGES.labels(result="unavailable").inc()
        return problem(503, begin.reason, retry_after=begin.retry_after)

    def _refuse(self, refusal: Refusal, client: IPAddress | None, principal: Principal) -> JSONResponse:
        self._record(refusal, client, principal)
        metrics.API_MESSAGES.labels(result="refused").inc()
        return refusal_response(refusal)

    @staticmethod
    def _record(refusal: Refusal, client: IPAddress | None, principal: Principal) -> None:
        """Count and log the refusal as SMTP's are (`reject:` lines), naming the principal."""
        fields: dict[str, object] = {key: value for key, value in refusal.fields.items() if key != "user"}
        fields["user"] = principal.name
        record_rejection(
            refusal.reason,
            refusal.reply,
            client=str(client) if client is not None else "unknown",
            helo=None,
            queue_id=refusal.queue_id,
            **fields,
        )


def queued_response(queued: Queued, recipients: int) -> JSONResponse:
    """The 202 answer for a queued message."""
    answer = QueuedAnswer(queue_id=queued.queue_id, message_id=queued.message_id, recipients=recipients)
    return JSONResponse(answer.model_dump(), status_code=202)


def path_and_query(request: Request) -> str:
    """The request's path with its query (a raw message's envelope is in the query: part of the request)."""
    query = request.url.query
    return f"{request.url.path}?{query}" if query else request.url.path


def client_address(request: Request) -> IPAddress | None:
    """The address the request came from (the pod's, in a cluster), None when unknown."""
    if request.client is None:
        return None
    try:
        return ipaddress.ip_address(request.client.host)
    except ValueError:
        return None


def sending_router(api: SendingApi, auth: BearerAuth, max_request: int) -> APIRouter:
    """The router holding POST /v1/messages; `max_request` is only documented here (BodyLimit enforces it)."""
    router = APIRouter(prefix="/v1")

    @router.post(
        "/messages",
        status_code=202,
        response_model=QueuedAnswer,
        summary="Send a message",
        description=(
            "Queue a message, given as JSON (MessageRequest) or as a raw RFC 5322 message (`message/rfc822`, "
            "with the envelope in the `from` and `to` query parameters or, without them, from its headers). "
            f"Bodies up to {max_request} bytes."
        ),
        responses={
            401: {"description": "No or an unknown credential"},
            403: {"description": "The credential has no sender identities, or the sender or From: is outside them"},
            409: {"description": "A request with the same Idempotency-Key is still in flight: retry after a second"},
            413: {"description": "The request or the message is larger than the limits"},
            415: {"description": "Content-Type is neither application/json nor message/rfc822"},
            422: {
                "description": "Invalid input (the field is named), refused recipients, or an Idempotency-Key reused "
                "with another request"
            },
            503: {"description": "Temporarily unavailable (broker, tracker, recipient check): retry after Retry-After"},
        },
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    JSON: {"schema": {"$ref": "#/components/schemas/MessageRequest"}},
                    RFC822: {"schema": {"type": "string", "format": "binary"}},
                },
            }
        },
    )
    async def send_message(
        request: Request,
        principal: Annotated[Principal, Depends(auth)],
        idempotency_key: Annotated[
            str | None,
            Header(
                alias="Idempotency-Key",
                description="Makes a retry safe: a repeat within 24 h returns the first answer and queues nothing",
            ),
        ] = None,
        envelope_from: Annotated[
            str | None, Query(alias="from", description="message/rfc822 only: the envelope sender")
        ] = None,
        to: Annotated[list[str] | None, Query(description="message/rfc822 only: the envelope recipients")] = None,
        notify: Annotated[
            str | None,
            Query(
                description="message/rfc822 only: when to send delivery status notifications (RFC 3461 NOTIFY), "
                "`never` or any of `success,failure,delay`; default failure and delay"
            ),
        ] = None,
        ret: Annotated[
            str | None, Query(description="message/rfc822 only: a failure report returns `full` or `hdrs` (RET)")
        ] = None,
        envid: Annotated[
            str | None,
            Query(description="message/rfc822 only: your id for the reports (ENVID): printable ASCII, at most 100"),
        ] = None,
    ) -> JSONResponse:
        return await api.send(request, principal, idempotency_key, envelope_from, to, (notify, ret, envid))

    return router
