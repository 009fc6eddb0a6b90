"""Operators' delete/hold/release rules (`AdminDecision`, proto/kubemta/v1/events.proto), as a
service that owns a message sees them when it next touches it.

`Decisions` is the pure view: `apply` each decision read from the `decisions` stream, then ask
`verdict(queue_id=, sender=, domain=, arrival=)` for one job before working on it. The rules:
- a decision applies only to messages that arrived at or before its `time` (later mail is not
  affected, as with Postfix's postsuper), and only while it is younger than the stream's
  retention (`max_age`: a restarted service would not read it any more either);
- every non-empty selector field must match: the queue id exactly, the sender and the domain
  case-insensitively (a domain also without a trailing dot and in its IDNA form), the sender
  "<>" meaning the null sender; `all` matches every message, for RELEASE only (an operator's
  delete or hold names its mail: a DELETE or HOLD with `all`, or with no field at all, is
  ignored and logged);
- a matching DELETE wins over everything (the latest decided one says whether a DSN goes out);
  otherwise the latest decided matching HOLD or RELEASE decides (RELEASE: go on as usual).
At most `max_rules` rules are kept (the oldest applied are dropped, with a log line); a
decision seen again (the stream read again) replaces itself.

Keeping the view up to date from the `decisions` stream, and asking it about one DeliveryJob, is
decision_follower.py's job.
"""

import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Protocol

from kubemta.v1 import events_pb2
from kubemta_common.logs import sanitize

logger = logging.getLogger(__name__)

MAX_RULES = 100_000
"""Most rules a `Decisions` keeps."""
MAX_FIELD = 1024
"""Longest selector field honoured (an address or domain is far shorter: a longer one is an error)."""
DEFAULT_MAX_AGE = 7 * 86400.0
"""The default retention of the `decisions` stream (KUBEMTA_DECISIONS_MAX_AGE)."""
NULL_SENDER = "<>"


class Action(StrEnum):
    NONE = "none"
    DELETE = "delete"
    HOLD = "hold"


@dataclass(frozen=True)
class Verdict:
    """What to do with one job: its action, the decision that says so (None: no rule matched), and for a
    DELETE whether the sender gets a DSN."""

    action: Action
    decision: events_pb2.AdminDecision | None
    dsn: bool


GO_ON = Verdict(Action.NONE, None, False)


def normal_sender(sender: str) -> str:
    """An envelope sender for comparing: lower case, without angle brackets; the null sender is "<>"."""
    bare = sender.strip()
    if bare.startswith("<") and bare.endswith(">"):
        bare = bare[1:-1].strip()
    return bare.lower() if bare else NULL_SENDER


def normal_domain(domain: str) -> str:
    """A domain for comparing: lower case, no trailing dot, internationalised labels in their IDNA (xn--) form
    when they have one. Normalising twice gives the same name: white space before a trailing dot goes too
    ("x ." is "x"), and so does the dot IDNA makes of a trailing ideographic full stop ("x。" is "x")."""
    name = _without_trailing_dots(domain).lower()
    if name.isascii():
        return name
    try:
        return _without_trailing_dots(name.encode("idna").decode("ascii"))
    except UnicodeError:
        return name


def _without_trailing_dots(name: str) -> str:
    """`name` without surrounding white space and without trailing dots, however they alternate."""
    bare = name.strip()
    while bare.endswith("."):
        bare = bare[:-1].rstrip()
    return bare


@dataclass(frozen=True, slots=True)
class _Rule:
    decision: events_pb2.AdminDecision
    verb: int
    time: datetime
    order: int
    """When it was applied (ties of `time`: the later applied wins)."""
    queue_id: str
    sender: str
    domain: str
    all: bool

    def matches(self, queue_id: str, sender: str, domain: str) -> bool:
        if self.all:
            return True
        return (
            (not self.queue_id or self.queue_id == queue_id)
            and (not self.sender or self.sender == sender)
            and (not self.domain or self.domain == domain)
        )


def _rule_of(decision: events_pb2.AdminDecision, order: int) -> _Rule | None:
    """The rule a decision makes, or None (logged) when it is not one kubemta honours."""
    selector = decision.selector
    given = (selector.queue_id, selector.sender, selector.domain)
    queue_id = selector.queue_id.strip()
    sender = normal_sender(selector.sender) if selector.sender.strip() else ""
    domain = normal_domain(selector.domain) if selector.domain else ""
    problem = ""
    if decision.verb not in (
        events_pb2.DECISION_VERB_DELETE,
        events_pb2.DECISION_VERB_HOLD,
        events_pb2.DECISION_VERB_RELEASE,
    ):
        problem = f"unknown verb {decision.verb}"
    elif not decision.HasField("time"):
        problem = "no time"
    elif any(len(field) > MAX_FIELD for field in given):
        problem = "a selector field too long"
    elif selector.all and decision.verb != events_pb2.DECISION_VERB_RELEASE:
        problem = "'all' is for release only"
    elif any(field and not value for field, value in zip(given, (queue_id, sender, domain), strict=True)):
        problem = "a selector field that names nothing"  # e.g. domain "." must not widen the rule to all mail
    elif not selector.all and not (queue_id or sender or domain):
        problem = "an empty selector"
    time: datetime | None = None
    if not problem:
        try:
            time = decision.time.ToDatetime(tzinfo=UTC)
        except (ValueError, OverflowError, OSError):
            problem = "an invalid time"
    if problem or time is None:
        logger.warning("ignoring admin decision %s: %s", describe(decision), problem)
        return None
    return _Rule(
        decision=decision,
        verb=decision.verb,
        time=time,
        order=order,
        queue_id=queue_id,
        sender=sender,
        domain=domain,
        all=selector.all,
    )


class DecisionView(Protocol):
    """What a verdict needs: the operators' rules (`Decisions`; tests substitute a fake)."""

    def verdict(
        self, *, queue_id: str, sender: str, domain: str, arrival: datetime, released_at: datetime | None = None
    ) -> Verdict:
        """What to do now with a job of this message for this domain (released by an operator at `released_at`)."""
        ...


def _key(decision: events_pb2.AdminDecision) -> str | bytes:
    return decision.decision_id or decision.SerializeToString(deterministic=True)


class Decisions:
    """Operators' rules, applied in stream order; `verdict` says what to do with one job."""

    def __init__(
        self,
        max_age: float = DEFAULT_MAX_AGE,
        *,
        max_rules: int = MAX_RULES,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._max_age = timedelta(seconds=max_age)
        self._max_rules = max(1, max_rules)
        self._clock = clock
        self._rules: OrderedDict[str | bytes, _Rule] = OrderedDict()
        self._by_queue_id: dict[str, set[str | bytes]] = {}
        self._by_sender: dict[str, set[str | bytes]] = {}
        self._by_domain: dict[str, set[str | bytes]] = {}
        self._all: set[str | bytes] = set()
        self._applied = 0

    def __len__(self) -> int:
        return len(self._rules)

    def apply(self, decision: events_pb2.AdminDecision) -> None:
        """Add one decision (the same decision again replaces it); an invalid or expired one is ignored."""
        self._applied += 1
        rule = _rule_of(decision, self._applied)
        if rule is None:
            return
        if rule.time < self._clock() - self._max_age:
            logger.debug("admin decision %s expired", sanitize(decision.decision_id, 80))
            return
        key = _key(decision)
        self._remove(key)
        self._rules[key] = rule
        if rule.all:
            self._all.add(key)
        else:
            value, index = self._index(rule)
            index.setdefault(value, set()).add(key)
        self._prune()

    def _index(self, rule: _Rule) -> tuple[str, dict[str, set[str | bytes]]]:
        """The index a rule is found through: its queue id, else its sender, else its domain."""
        if rule.queue_id:
            return rule.queue_id, self._by_queue_id
        if rule.sender:
            return rule.sender, self._by_sender
        return rule.domain, self._by_domain

    def _remove(self, key: str | bytes) -> None:
        rule = self._rules.pop(key, None)
        if rule is None:
            return
        if rule.all:
            self._all.discard(key)
            return
        value, index = self._index(rule)
        keys = index.get(value)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del index[value]

    def _prune(self) -> None:
        """Drop expired rules from the oldest applied end, and the oldest beyond `max_rules`."""
        cutoff = self._clock() - self._max_age
        while self._rules:
            key, rule = next(iter(self._rules.items()))
            if rule.time >= cutoff and len(self._rules) <= self._max_rules:
                break
            if rule.time >= cutoff:
                logger.warning(
                    "more than %d admin rules: dropping the oldest, %s", self._max_rules, sanitize(str(key), 80)
                )
            self._remove(key)

    def verdict(
        self, *, queue_id: str, sender: str, domain: str, arrival: datetime, released_at: datetime | None = None
    ) -> Verdict:
        """What the operators' rules say about a job of message `queue_id` (from `sender`, to `domain`) that
        arrived at `arrival` (a naive time is taken as UTC). A job an operator released at `released_at` is not
        held again by a HOLD issued before then: the tracker sends it back to `route` right after appending the
        RELEASE decision, and a service may get the job before it read the decision."""
        if not self._rules:
            return GO_ON
        if arrival.tzinfo is None:
            arrival = arrival.replace(tzinfo=UTC)
        if released_at is not None and released_at.tzinfo is None:
            released_at = released_at.replace(tzinfo=UTC)
        self._prune()
        sender_key = normal_sender(sender)
        domain_key = normal_domain(domain)
        keys = set(self._all)
        keys.update(self._by_queue_id.get(queue_id, ()))
        keys.update(self._by_sender.get(sender_key, ()))
        keys.update(self._by_domain.get(domain_key, ()))
        cutoff = self._clock() - self._max_age
        delete: _Rule | None = None
        hold_or_release: _Rule | None = None
        for key in keys:
            rule = self._rules[key]
            if rule.time < cutoff or arrival > rule.time or not rule.matches(queue_id, sender_key, domain_key):
                continue
            if rule.verb == events_pb2.DECISION_VERB_DELETE:
                if delete is None or _later(rule, delete):
                    delete = rule
            elif rule.verb == events_pb2.DECISION_VERB_HOLD and released_at is not None and rule.time <= released_at:
                continue  # released since: this hold is over for the job
            elif hold_or_release is None or _later(rule, hold_or_release):
                hold_or_release = rule
        if delete is not None:
            return Verdict(Action.DELETE, delete.decision, delete.decision.dsn)
        if hold_or_release is None:
            return GO_ON
        if hold_or_release.verb == events_pb2.DECISION_VERB_HOLD:
            return Verdict(Action.HOLD, hold_or_release.decision, False)
        return Verdict(Action.NONE, hold_or_release.decision, False)


def describe(decision: events_pb2.AdminDecision) -> str:
    """One line for a log: id, verb, selector, time and actor (client text sanitised)."""
    verb = events_pb2.DecisionVerb.Name(decision.verb) if decision.verb in events_pb2.DecisionVerb.values() else ""
    selector = decision.selector
    fields = [
        f"{name}={sanitize(value, 100)}"
        for name, value in (("queue_id", selector.queue_id), ("sender", selector.sender), ("domain", selector.domain))
        if value
    ]
    if selector.all:
        fields.append("all")
    return (
        f"{sanitize(decision.decision_id, 80)} {verb.removeprefix('DECISION_VERB_') or decision.verb} "
        f"{' '.join(fields) or '(no selector)'} dsn={decision.dsn} by {sanitize(decision.actor, 80)}"
    )


def _later(rule: _Rule, other: _Rule) -> bool:
    return (rule.time, rule.order) > (other.time, other.order)
