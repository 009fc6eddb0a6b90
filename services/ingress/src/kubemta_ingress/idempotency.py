"""Idempotency-Key for `POST /v1/messages`: a retry gets the first answer and queues nothing, on any replica.

draft-ietf-httpapi-idempotency-key-header: a client sends `Idempotency-Key` with a request it may repeat;
a repeat within `KUBEMTA_IDEMPOTENCY_WINDOW` (a day) must not queue a second message. The ingress replicas
share no memory, so the tracker decides (services/tracker claims.py): `Idempotency.begin` claims the key
through it, and every tracker replica answers a claim the same way, because the first claim in the order of
the `events` stream wins. What `begin` gives the API route (`Begin`):

- `Proceed(claimant, dedup_key)`: this request holds the key; queue the message with
  `AcceptedMessage.dedup_key = dedup_key` (`idem:<key>`: the tracker then knows the key is done), and call
  `abandon` if the request fails before anything was queued (503, 413, ...), so a retry may go ahead at once;
- `Replay(queue_id)`: a message was queued for this key: answer as the first request was answered;
- `Conflict("in-progress")` -> 409: the first request is still in flight (the client retried too early);
  `Conflict("other-request")` -> 422: the key was used for a different request (another fingerprint);
- `Unavailable` -> 503 with Retry-After: the tracker could not answer; never queue without knowing.

The key sent to the tracker is the hex SHA-256 of the principal's name and the client's key (`key_hash`), so
two principals never share a key and the tracker never sees the client's value; the fingerprint is the hex
SHA-256 of the request (`request_fingerprint`). Both hash length-prefixed fields (`a` + `bc` != `ab` + `c`).
A claim that is never released (the ingress crashed) stops holding its key after the tracker's
`KUBEMTA_IDEMPOTENCY_CLAIM_TTL` (60 s, longer than the publish timeout).
"""

import hashlib
import logging
import re
import secrets
from dataclasses import dataclass
from typing import Literal, Protocol

from kubemta_common.events.tracker_client import IdempotencyAnswer, TrackerUnavailable
from kubemta_common.logs import sanitize

logger = logging.getLogger(__name__)

HEADER = "Idempotency-Key"
MAX_KEY = 255
"""Longest key accepted (the draft leaves it to the resource; 255 holds any UUID, ULID or hash a client makes)."""
MAX_WINDOW = 7 * 86400.0
"""Longest window the tracker accepts (its idempotency_api.MAX_WINDOW)."""
RETRY_AFTER = 5
"""Seconds a 503 asks the client to wait when the tracker could not answer."""
DEDUP_PREFIX = "idem:"
"""`AcceptedMessage.dedup_key` of a claimed request: this + the key hash (the tracker's claims.DEDUP_PREFIX)."""
QUEUE_ID = re.compile(r"[0-9A-Za-z]{1,64}")
"""A queue id from the tracker goes into the answer: only what kubemta's queue ids are made of."""
BARE = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]{1,255}")
"""A key sent without the quotes of an sf-string: visible ASCII without `"` and `\\`."""
VERSION = b"kubemta-idempotency-1"


class InvalidIdempotencyKey(ValueError):
    """The Idempotency-Key header is not a key this API takes; the message says why (never the value)."""


@dataclass(frozen=True, slots=True)
class IdempotencyKey:
    """A client's Idempotency-Key: 1-255 printable ASCII characters."""

    value: str

    @classmethod
    def parse(cls, header: str) -> "IdempotencyKey":
        """The key of an `Idempotency-Key` header value: an sf-string (RFC 8941 §3.3.3, `"..."` with `\\"` and
        `\\\\` escapes, the draft's syntax), or leniently the same characters without quotes (no space, `"` or
        `\\` then); InvalidIdempotencyKey with the reason otherwise."""
        text = header.strip(" \t")
        if not text:
            raise InvalidIdempotencyKey("the Idempotency-Key is empty")
        if text.startswith('"'):
            value = _sf_string(text)
        elif BARE.fullmatch(text):
            value = text
        elif len(text) > MAX_KEY:
            raise InvalidIdempotencyKey(f"the Idempotency-Key is longer than {MAX_KEY} characters")
        else:
            raise InvalidIdempotencyKey(
                "the Idempotency-Key is not a structured-field string (RFC 8941 §3.3.3: printable ASCII in quotes)"
            )
        if not value:
            raise InvalidIdempotencyKey("the Idempotency-Key is empty")
        if len(value) > MAX_KEY:
            raise InvalidIdempotencyKey(f"the Idempotency-Key is longer than {MAX_KEY} characters")
        return cls(value)


def _sf_string(text: str) -> str:
    """The value of an sf-string that is the whole of `text` (RFC 8941 §4.2.5; no parameters)."""
    chars: list[str] = []
    index = 1
    while index < len(text):
        char = text[index]
        if char == "\\":
            index += 1
            if index >= len(text) or text[index] not in '"\\':
                raise InvalidIdempotencyKey('the Idempotency-Key has a backslash not before " or \\')
            chars.append(text[index])
        elif char == '"':
            if index != len(text) - 1:
                raise InvalidIdempotencyKey("the Idempotency-Key has text after its closing quote")
            return "".join(chars)
        elif not " " <= char <= "~":
            raise InvalidIdempotencyKey("the Idempotency-Key holds a character that is not printable ASCII")
        else:
            chars.append(char)
        index += 1
    raise InvalidIdempotencyKey("the Idempotency-Key has no closing quote")


def _digest(*fields: bytes) -> str:
    digest = hashlib.sha256()
    for field in (VERSION, *fields):
        digest.update(len(field).to_bytes(8, "big"))
        digest.update(field)
    return digest.hexdigest()


def key_hash(principal_name: str, key: IdempotencyKey | str) -> str:
    """The key the tracker sees: hex SHA-256 of the principal's name and the client's key."""
    value = key.value if isinstance(key, IdempotencyKey) else key
    return _digest(b"key", principal_name.encode("utf-8", "surrogateescape"), value.encode("ascii", "replace"))


def request_fingerprint(method: str, path: str, content_type: str, body: bytes) -> str:
    """Hex SHA-256 of what makes two requests the same request: method, path, content type and body."""
    return _digest(
        b"request",
        method.upper().encode("ascii", "replace"),
        path.encode("utf-8", "surrogateescape"),
        content_type.encode("utf-8", "surrogateescape"),
        body,
    )


@dataclass(frozen=True, slots=True)
class Proceed:
    """This request holds the key: queue with `dedup_key`; `abandon` when it queued nothing."""

    claimant: str
    dedup_key: str

    @property
    def key(self) -> str:
        """The key hash claimed."""
        return self.dedup_key.removeprefix(DEDUP_PREFIX)


@dataclass(frozen=True, slots=True)
class Replay:
    """A message was queued for this key: answer with its queue id, queue nothing."""

    queue_id: str


@dataclass(frozen=True, slots=True)
class Conflict:
    """The key is taken: by a request still in flight (409) or by a different request (422)."""

    reason: Literal["in-progress", "other-request"]

    @property
    def status(self) -> int:
        return 409 if self.reason == "in-progress" else 422


@dataclass(frozen=True, slots=True)
class Unavailable:
    """The tracker could not answer: 503 with `Retry-After: retry_after`; nothing is queued. `reason` may be
    shown to the client (it names no internals)."""

    reason: str
    retry_after: int = RETRY_AFTER
    status: int = 503


Begin = Proceed | Replay | Conflict | Unavailable


class Named(Protocol):
    """The caller (api_auth.Principal): its name is part of the key."""

    @property
    def name(self) -> str: ...


class IdempotencyClaims(Protocol):
    """The tracker's claims (`TrackerClient`); both raise TrackerUnavailable when it cannot answer."""

    async def claim_idempotency(
        self, key: str, fingerprint: str, claimant: str, window: float
    ) -> IdempotencyAnswer: ...

    async def release_idempotency(self, key: str, claimant: str) -> None: ...


class Idempotency:
    """Claims Idempotency-Keys through the tracker for the API route (None: no tracker, every begin Unavailable)."""

    def __init__(self, tracker: IdempotencyClaims | None, window: float) -> None:
        if not 0 < window <= MAX_WINDOW:
            raise ValueError(f"the idempotency window must be more than 0 and at most {MAX_WINDOW:g} seconds")
        self._tracker = tracker
        self._window = window

    async def begin(self, principal: Named, key: IdempotencyKey, fingerprint: str) -> Begin:
        """Claim `key` of `principal` for the request with `fingerprint` (request_fingerprint)."""
        if self._tracker is None:
            return Unavailable("no tracker is configured (KUBEMTA_TRACKER_URL) to remember Idempotency-Keys")
        hashed = key_hash(principal.name, key)
        claimant = secrets.token_urlsafe(16)
        try:
            answer = await self._tracker.claim_idempotency(hashed, fingerprint, claimant, self._window)
        except TrackerUnavailable as exc:
            logger.warning("the tracker could not answer an Idempotency-Key claim: %s", exc)
            return Unavailable("the Idempotency-Key cannot be checked right now")  # for the client: no internals
        if answer.state == "claimed":
            return Proceed(claimant, DEDUP_PREFIX + hashed)
        if answer.fingerprint and answer.fingerprint != fingerprint:
            return Conflict("other-request")
        if answer.state == "in_progress":
            return Conflict("in-progress")
        if not QUEUE_ID.fullmatch(answer.queue_id):
            logger.warning("the tracker answered a claim with %r, not a queue id", sanitize(answer.queue_id[:64]))
            return Unavailable("the tracker's answer has no valid queue id")
        return Replay(answer.queue_id)

    async def abandon(self, begin: Begin) -> None:
        """Release the claim of a `Proceed` whose request queued nothing (anything else: nothing to do). When the
        tracker cannot confirm, the claim holds the key until the tracker's claim TTL, then a retry may go on."""
        if not isinstance(begin, Proceed) or self._tracker is None:
            return
        try:
            await self._tracker.release_idempotency(begin.key, begin.claimant)
        except TrackerUnavailable as exc:
            logger.warning("could not release an Idempotency-Key claim (it expires by itself): %s", exc)
