"""What the sending API answers for a refusal: the SMTP decision (acceptance.py) in HTTP terms.

The API and SMTP share one decision, so the API's answer carries the SMTP reply and its
RFC 3463 enhanced status code beside an HTTP status that says what the client should do:

- 422 the request cannot succeed as it is: an address's syntax, too many recipients, a
  recipient the mailbox server does not know (5.1.1), content rules, a mail loop;
- 403 the caller may not send this: a sender or From: outside its identities (5.7.1);
- 413 the message is larger than KUBEMTA_MAX_MESSAGE_SIZE or the broker's limit (5.3.4);
- 503 with Retry-After: a temporary failure (any 4xx reply: the broker did not confirm,
  a local recipient could not be verified now); retrying later, with the same
  Idempotency-Key, is safe.

The body is JSON: `detail` (the reply's text), `status` (the enhanced code), `reason` (the
`kubemta_messages_rejected_total` label) and, for a recipient, `recipient`.
"""

from collections.abc import Sequence

from fastapi.responses import JSONResponse

from kubemta_ingress.acceptance import Refusal
from kubemta_ingress.rejections import Reason

RETRY_AFTER = 5
"""Seconds a client is asked to wait after a temporary failure (503)."""
FORBIDDEN = frozenset({Reason.SENDER_NOT_OWNED, Reason.FROM_NOT_OWNED, Reason.MULTIPLE_FROM, Reason.RELAY_DENIED})
TOO_LARGE = frozenset({Reason.MESSAGE_TOO_BIG})


def http_status(refusal: Refusal) -> int:
    """The HTTP status of a refusal (module docstring)."""
    if refusal.code < 500:
        return 503
    if refusal.reason in TOO_LARGE:
        return 413
    if refusal.reason in FORBIDDEN:
        return 403
    return 422


def reply_text(refusal: Refusal) -> str:
    """The reply without its basic and enhanced codes: `Sender address rejected: not owned by user x`."""
    parts = refusal.reply.split(" ", 2 if refusal.status else 1)
    return parts[-1]


def refusal_body(refusal: Refusal, recipient: str | None = None) -> dict[str, object]:
    """The JSON description of one refusal."""
    body: dict[str, object] = {
        "detail": reply_text(refusal),
        "status": refusal.status,
        "reason": refusal.reason.value,
    }
    if recipient is not None:
        body["recipient"] = recipient
    return body


def refusal_response(refusal: Refusal) -> JSONResponse:
    """The answer to a refused message or sender."""
    status = http_status(refusal)
    headers = {"Retry-After": str(RETRY_AFTER)} if status == 503 else None
    return JSONResponse(refusal_body(refusal), status_code=status, headers=headers)


def recipients_response(refused: Sequence[tuple[str, Refusal]]) -> JSONResponse:
    """The answer when recipients were refused: nothing is queued (a message goes to all its recipients or to
    none); 503 when any refusal is temporary (the request may succeed later), else the status of the first."""
    statuses = [http_status(refusal) for _, refusal in refused]
    status = 503 if 503 in statuses else statuses[0]
    body = {
        "detail": f"{len(refused)} recipient(s) refused; nothing was queued",
        "recipients": [refusal_body(refusal, recipient) for recipient, refusal in refused],
    }
    headers = {"Retry-After": str(RETRY_AFTER)} if status == 503 else None
    return JSONResponse(body, status_code=status, headers=headers)


def problem(status: int, detail: str, *, retry_after: int | None = None) -> JSONResponse:
    """A plain `{"detail": ...}` answer (the shape FastAPI gives its own errors)."""
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)
