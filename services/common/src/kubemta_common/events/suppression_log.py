"""Appending changes of the cluster-wide suppression list to the `suppressions` stream.

The list's truth is the stream (amqp/streams.py `SUPPRESSIONS`): one `SuppressionChange` per stream
message (proto/kubemta/v1/events.proto), an add (`suppressed`, until `expires`) or a remove of one
address. Every tracker replica indexes it (services/tracker suppressions.py), the latest change of
an address in stream order winning, so the list is the same on every replica and is rebuilt from
the stream by a replica that starts with an empty index.

Two writers:
- the queue-manager, for a recipient that hard-bounced as `invalid_recipient`: `suppress(address, *,
  reason, queue_id, diagnostic)` (its `SuppressionSink`) never blocks and never fails. The change waits
  in a bounded buffer (`buffer`) for a background task that publishes it with a confirm, one at a time in
  the order they came; while the stream does not take it, it is retried after a growing pause (at most
  `MAX_RETRY_PAUSE`), and beyond `buffer` changes the oldest are dropped and counted
  (`kubemta_suppression_changes_dropped_total`). A suppression protects the sending reputation; the bounce
  and the mail flow never wait for it. Like the EventLog (emitter.py), but with one record per stream
  message: bounces of invalid recipients are few, so group commits would buy nothing, and the tracker
  keys its read-your-writes wait on one change id per record.
- the tracker's admin API (an operator's add or remove): `await append(change)` publishes at once and
  says whether the stream confirmed it (bounded by the publisher's KUBEMTA_PUBLISH_TIMEOUT), so the API
  answers only after the change is durable. Both publish through the service's `Publisher` (publish_raw).

Addresses are compared as `normalize_address` returns them: the whole addr-spec lower-cased (RFC 5321
section 2.4 leaves the local part's case to the receiving host; for a suppression list a false match of
`Bob@` and `bob@` is cheaper than a second bounce). `normalize_address` refuses what is no address
(controls, spaces, CR/LF, angle brackets, more than 254 octets: RFC 5321 section 4.5.3.1.3's path limit less
the brackets), so hostile text never becomes a key.
"""

import asyncio
import logging
import re
import secrets
import time
from collections import deque
from datetime import UTC, datetime

from prometheus_client import Counter

from kubemta.v1 import events_pb2
from kubemta_common.amqp.publisher import HeldPublisher
from kubemta_common.amqp.streams import SUPPRESSIONS
from kubemta_common.background_task import cancel_and_wait
from kubemta_common.errors import MessageTooLarge, PublishFailed
from kubemta_common.logs import sanitize

logger = logging.getLogger(__name__)

MAX_ADDRESS = 254
"""Longest address (octets of UTF-8): RFC 5321 section 4.5.3.1.3's 256-octet path without its angle brackets."""
MAX_LOCAL_PART = 64
"""RFC 5321 section 4.5.3.1.1."""
MAX_DOMAIN = 253
MAX_REASON = 200
MAX_DIAGNOSTIC = 500
"""Characters of a bounce's diagnostic kept on the change (a remote server's reply, shown by the CLI)."""
MAX_RETRY_PAUSE = 5.0
CHANGE_TYPE = events_pb2.SuppressionChange.DESCRIPTOR.full_name
BOUNCE = "bounce"
ADMIN = "admin"

_DOMAIN = re.compile(r"(?:[^\s@\[\]<>()\\,;:\"]+|\[[^\s\[\]\\]+\])")
"""A domain or an address literal, loosely (IDNA and SMTPUTF8 domains pass; spaces, brackets out of place and
separators do not)."""
_LOCAL = re.compile(r"[^\s<>()\[\]\\,;:@\"]+|\"[^\"\\\s]+\"")
"""A dot-atom-ish or quoted local part without whitespace or escapes (what mailers actually send)."""

CHANGES_PUBLISHED = Counter(
    "kubemta_suppression_changes_published_total", "Suppression list changes the `suppressions` stream confirmed"
)
CHANGES_DROPPED = Counter(
    "kubemta_suppression_changes_dropped_total",
    "Suppression list changes dropped because the buffer was full while the stream did not take them",
)


def normalize_address(text: str) -> str:
    """`text` as the suppression list compares it (lower-cased); ValueError when it is not an address."""
    if not isinstance(text, str) or not text:
        raise ValueError("empty address")
    if len(text.encode("utf-8", "surrogatepass")) > MAX_ADDRESS:
        raise ValueError(f"address longer than {MAX_ADDRESS} octets")
    if not text.isprintable() or any(char.isspace() for char in text):
        raise ValueError("address with spaces or control characters")
    local, at, domain = text.rpartition("@")
    if not at or not local or not domain:
        raise ValueError("not local-part@domain")
    if len(local) > MAX_LOCAL_PART or not _LOCAL.fullmatch(local):
        raise ValueError("bad local part")
    if len(domain) > MAX_DOMAIN or not _DOMAIN.fullmatch(domain) or domain.startswith(".") or ".." in domain:
        raise ValueError("bad domain")
    return text.lower()


def address_domain(address: str) -> str:
    """The domain of a normalized address."""
    return address.rpartition("@")[2]


def change(
    address: str,
    *,
    suppressed: bool,
    source: str,
    actor: str,
    reason: str = "",
    ttl: float = 0.0,
    queue_id: str = "",
    diagnostic: str = "",
    now: float | None = None,
) -> events_pb2.SuppressionChange:
    """A new change of `address` (normalized here: ValueError when it is none), with a fresh id, stamped now;
    an add expires `ttl` seconds from now."""
    moment = time.time() if now is None else now
    record = events_pb2.SuppressionChange(
        change_id=secrets.token_hex(16),
        address=normalize_address(address),
        suppressed=suppressed,
        reason=reason[:MAX_REASON],
        source=source,
        actor=actor,
        queue_id=queue_id,
        diagnostic=diagnostic[:MAX_DIAGNOSTIC],
    )
    record.time.FromDatetime(datetime.fromtimestamp(moment, UTC))
    if suppressed:
        record.expires.FromDatetime(datetime.fromtimestamp(moment + ttl, UTC))
    return record


class SuppressionLog:
    """Publishes suppression list changes to the `suppressions` stream (the queue-manager's `SuppressionSink`)."""

    def __init__(self, publisher: HeldPublisher, *, actor: str, ttl: float, buffer: int = 10000) -> None:
        self._publisher = publisher  # the service's Publisher: confirmed, within KUBEMTA_PUBLISH_TIMEOUT
        self._actor = actor
        self._ttl = ttl
        self._limit = buffer
        self._buffer: deque[events_pb2.SuppressionChange] = deque()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._pause = 0.1
        self._failing = False
        self._task: asyncio.Task[None] | None = None

    @property
    def buffered(self) -> int:
        """Changes not yet confirmed by the stream."""
        return len(self._buffer)

    def start(self) -> None:
        """Start the background publisher (in the running loop)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="kubemta-suppressions")

    def suppress(self, address: str, *, reason: str, queue_id: str, diagnostic: str) -> None:
        """Suppress `address` for the TTL after a hard bounce (`reason`: its class); never blocks or raises: an
        address that is none is logged and skipped."""
        try:
            record = change(
                address,
                suppressed=True,
                source=BOUNCE,
                actor=self._actor,
                reason=reason,
                ttl=self._ttl,
                queue_id=queue_id,
                diagnostic=diagnostic,
            )
        except ValueError as exc:
            logger.warning("not suppressing %s: %s", sanitize(str(address), 100), exc, extra={"queue_id": queue_id})
            return
        logger.info(
            "suppressing %s for %ds after a hard bounce (%s)",
            sanitize(record.address, 254),
            int(self._ttl),
            sanitize(reason, 40),
            extra={"queue_id": queue_id},
        )
        while len(self._buffer) >= self._limit:
            self._buffer.popleft()
            CHANGES_DROPPED.inc()
        self._buffer.append(record)
        self._idle.clear()
        self._wake.set()

    async def append(self, record: events_pb2.SuppressionChange) -> bool:
        """Publish `record` now and wait for the stream's confirm (KUBEMTA_PUBLISH_TIMEOUT); True when confirmed."""
        published = await self._publish(record)
        if published:
            CHANGES_PUBLISHED.inc()
        return published

    async def _run(self) -> None:
        while True:
            if not self._buffer:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            record = self._buffer[0]
            if await self._publish(record):
                if self._buffer and self._buffer[0] is record:
                    self._buffer.popleft()
                CHANGES_PUBLISHED.inc()
                self._failing, self._pause = False, 0.1
                continue
            self._failing = True
            pause, self._pause = self._pause, min(self._pause * 2, MAX_RETRY_PAUSE)
            await asyncio.sleep(pause)

    async def _publish(self, record: events_pb2.SuppressionChange) -> bool:
        try:
            await self._publisher.publish_raw(
                SUPPRESSIONS, record.SerializeToString(), message_id=record.change_id, message_type=CHANGE_TYPE
            )
        except (PublishFailed, MessageTooLarge) as exc:  # keep the change, mail flow goes on
            if not self._failing:
                logger.warning("the %s stream did not take a change (kept, retrying): %s", SUPPRESSIONS, exc)
            return False
        return True

    async def close(self, drain_seconds: float) -> None:
        """Publish what is buffered (for at most `drain_seconds`), then stop."""
        if self._task is None:
            return
        if not self._failing:
            try:
                async with asyncio.timeout(drain_seconds):
                    await self._idle.wait()
            except TimeoutError:
                pass
        await cancel_and_wait(self._task)
        self._task = None
        if self._buffer:
            logger.warning("stopping with %d suppression changes not published", len(self._buffer))
            CHANGES_DROPPED.inc(len(self._buffer))
