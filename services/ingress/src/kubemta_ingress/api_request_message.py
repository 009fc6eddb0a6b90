"""The message a `POST /v1/messages` request asks for: composed from JSON (api_message.py) or parsed from a raw
`message/rfc822` body (api_message_raw.py), with its tags and DSN options.

Composing is pure Python in the email package and costs by what the body holds, not its size: about 5 µs per byte of
a recipient list (a named recipient is folded, then read back), 40 ns per byte of text or attachment. A body up to
`IN_LOOP_BODY` is built on the event loop (at most about 25 ms); a larger one in a worker thread, since the largest
requests (1,000 named recipients, a 10 MB attachment) take 0.3 to 0.4 s, during which the loop would answer no SMTP
command, no other request and no health probe. In a thread they share the interpreter with the loop, which gets its
turn every few milliseconds (`sys.getswitchinterval()`); the bench's 1 KiB requests stay on the loop, without a
thread's hand-offs. `python -m bench.api_loop_lag` measures how long one request holds the loop.
"""

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime

from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from kubemta_ingress.api_dsn import MessageDsn, query_dsn
from kubemta_ingress.api_message import ComposedMessage, compose
from kubemta_ingress.api_message_fields import InvalidMessage, request_errors
from kubemta_ingress.api_message_model import parse_request
from kubemta_ingress.api_message_raw import parse_raw

JSON = "application/json"
RFC822 = "message/rfc822"
IN_LOOP_BODY = 4096
"""Bodies up to this many bytes are built on the event loop; larger ones in a worker thread (module docstring)."""
OFF_LOOP_BUILDS = 2
"""Bodies built in threads at once; more wait their turn. The interpreter runs one thread at a time, so more would
not build faster, and they would take the shared default executor's threads from the SMTP password checks
(verify_pool.py) that need them."""

type DsnQuery = tuple[str | None, str | None, str | None]
"""A raw message's `notify`, `ret` and `envid` query parameters."""
type Built = tuple[ComposedMessage, list[str], MessageDsn]
"""The message, its tags and its DSN options."""


class UnsupportedMediaType(Exception):
    """The request's Content-Type is neither JSON nor message/rfc822."""


@dataclass(frozen=True, slots=True)
class PostedMessage:
    """What a request gives to build its message from."""

    media_type: str
    body: bytes
    envelope_from: str | None
    """A raw message's `from` query parameter."""
    envelope_to: list[str] | None
    """A raw message's `to` query parameters."""
    message_id: str
    """The Message-ID a composed message gets unless the request names its own."""
    dsn_query: DsnQuery


class MessageBuilder:
    """Builds each request's message, on the loop or (large bodies) in a worker thread, `OFF_LOOP_BUILDS` at once."""

    def __init__(self, max_recipients: int) -> None:
        self._max_recipients = max_recipients
        self._off_loop = asyncio.Semaphore(OFF_LOOP_BUILDS)

    async def build(self, posted: PostedMessage) -> Built:
        """The message, its tags and its DSN options from the request; raises RequestValidationError (422) naming
        the field, UnsupportedMediaType (415)."""
        if len(posted.body) <= IN_LOOP_BODY:
            return self._build(posted)
        async with self._off_loop:
            return await asyncio.to_thread(self._build, posted)

    def _build(self, posted: PostedMessage) -> Built:
        if posted.media_type == JSON:
            try:
                request = parse_request(posted.body, max_recipients=self._max_recipients)
            except ValidationError as exc:
                raise RequestValidationError(request_errors(exc)) from None
            try:
                composed = compose(request, now=datetime.now(UTC), message_id=posted.message_id)
            except InvalidMessage as exc:
                raise invalid(exc) from None
            return composed, list(request.tags), request.dsn.bus() if request.dsn is not None else MessageDsn()
        if posted.media_type == RFC822:
            try:
                raw = parse_raw(
                    posted.body,
                    envelope_from=posted.envelope_from,
                    recipients=posted.envelope_to,
                    max_recipients=self._max_recipients,
                )
                return raw, [], query_dsn(*posted.dsn_query)
            except InvalidMessage as exc:
                raise invalid(exc) from None
        raise UnsupportedMediaType


def invalid(exc: InvalidMessage) -> RequestValidationError:
    """An `InvalidMessage` as FastAPI's 422 shape."""
    return RequestValidationError(exc.errors())
