"""The dns-resolver's route answers as a queue-manager keeps them: domain -> route, until it is stale.

The resolver owns routing; it appends a `RouteAnswer` (proto/kubemta/v1/routes.proto) to the `routes` stream
(amqp/streams.py) for a domain whenever it built a route for it and had not published one still fresh
(route_answer_log.py). A queue-manager reads the stream into `RouteAnswers`, a map bounded by least recent
use, and may send a message's first-attempt job to a domain straight to `deliver` with the answer's route
while `fresh_until` has not passed (its own clock); otherwise the job goes to `route` as ever.

Freshness is what the resolver itself would reuse without asking again: the remaining TTL of the DNS answers
behind the route (capped at `MAX_ANSWER_SECONDS`), the remaining cache life of its MTA-STS TXT answer and
policy, or KUBEMTA_ROUTE_ANSWER_TTL for a static route. Only successful routes are answers.

The stream is input from the bus, so a record is checked before it is believed (`parse_answer`): garbage, an
empty or overlong domain, a route without hosts or with too many, a port outside 1-65535, a lifetime beyond
the cap or a time from the future are logged and ignored, never raised.
"""

import logging
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime

from google.protobuf.message import DecodeError

from kubemta.v1 import message_pb2, routes_pb2
from kubemta_common.logs import sanitize

logger = logging.getLogger(__name__)

MAX_ANSWER_SECONDS = 900.0
"""Longest lifetime of an answer, whatever the DNS TTLs say (the queue-manager reads this much back)."""
DEFAULT_CAPACITY = 100_000
"""Domains a queue-manager keeps answers for (least recently used dropped first)."""
MAX_HOSTS = 64
"""More next hops than this is no answer a resolver builds (MX sets are a handful of hosts)."""
MAX_DOMAIN = 253
"""RFC 1035 §2.3.4 (as text, without the root dot)."""
CLOCK_SKEW = 30.0
"""An answer resolved later than this after the reader's now is from a broken clock: ignored."""
ANSWER_TYPE = routes_pb2.RouteAnswer.DESCRIPTOR.full_name
ROUTE_KINDS = frozenset(message_pb2.TransportKind.values())


@dataclass(frozen=True, slots=True)
class Answer:
    """A checked answer: the route for `domain`, built at `resolved_at`, usable until `fresh_until` (epoch s)."""

    domain: str
    route: message_pb2.Route
    resolved_at: float
    fresh_until: float


def answer_record(domain: str, route: message_pb2.Route, *, now: float, fresh_for: float) -> routes_pb2.RouteAnswer:
    """The RouteAnswer for `route` to `domain`, resolved `now` (epoch seconds), fresh for `fresh_for` seconds
    (capped at MAX_ANSWER_SECONDS)."""
    record = routes_pb2.RouteAnswer(domain=domain)
    record.route.CopyFrom(route)
    record.resolved_at.FromDatetime(datetime.fromtimestamp(now, UTC))
    record.fresh_until.FromDatetime(datetime.fromtimestamp(now + min(fresh_for, MAX_ANSWER_SECONDS), UTC))
    return record


def _problem(record: routes_pb2.RouteAnswer, now: float) -> str | None:
    """Why `record` is no usable answer, or None."""
    domain = record.domain
    if not domain or len(domain) > MAX_DOMAIN or domain != domain.lower() or not domain.isprintable():
        return "bad domain"
    if any(char.isspace() for char in domain) or "@" in domain:
        return "bad domain"
    route = record.route
    if not record.HasField("route") or not route.hosts:
        return "no hosts"
    if len(route.hosts) > MAX_HOSTS:
        return f"{len(route.hosts)} hosts (more than {MAX_HOSTS})"
    if route.kind not in ROUTE_KINDS:
        return "unknown transport kind"
    for host in route.hosts:
        if host.unix_socket:
            continue
        if not host.address or not 1 <= host.port <= 65535:
            return "a host without an address or with a port outside 1-65535"
    if not record.HasField("resolved_at") or not record.HasField("fresh_until"):
        return "no times"
    resolved, until = record.resolved_at.ToSeconds(), record.fresh_until.ToSeconds()
    if until <= resolved or until - resolved > MAX_ANSWER_SECONDS + 1:
        return f"a lifetime of {until - resolved}s"
    if resolved > now + CLOCK_SKEW:
        return "resolved in the future"
    return None


def parse_answer(body: bytes, now: float) -> Answer | None:
    """The checked answer in a stream record's `body`; None (logged) when it is none."""
    try:
        record = routes_pb2.RouteAnswer.FromString(body)
    except (DecodeError, ValueError) as exc:
        logger.warning("a routes stream record that is no RouteAnswer: ignored (%s)", sanitize(str(exc), 100))
        return None
    problem = _problem(record, now)
    if problem is not None:
        logger.warning("a route answer for %r ignored: %s", sanitize(record.domain, 80), problem)
        return None
    return Answer(record.domain, record.route, record.resolved_at.ToSeconds(), record.fresh_until.ToSeconds())


class RouteAnswers:
    """The latest answer per domain, at most `capacity` domains (least recently used dropped first)."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self._capacity = max(1, capacity)
        self._answers: OrderedDict[str, Answer] = OrderedDict()

    def __len__(self) -> int:
        return len(self._answers)

    def add(self, answer: Answer) -> None:
        """Keep `answer` unless one resolved later is kept for its domain already."""
        known = self._answers.get(answer.domain)
        if known is not None and known.resolved_at > answer.resolved_at:
            return
        self._answers[answer.domain] = answer
        self._answers.move_to_end(answer.domain)
        while len(self._answers) > self._capacity:
            self._answers.popitem(last=False)

    def lookup(self, domain: str, now: float) -> tuple[message_pb2.Route | None, str]:
        """The fresh route for `domain` and "used", or None and "missing" (no answer) or "stale" (dropped now)."""
        answer = self._answers.get(domain)
        if answer is None:
            return None, "missing"
        if now >= answer.fresh_until:
            del self._answers[domain]
            return None, "stale"
        self._answers.move_to_end(domain)
        return answer.route, "used"
