"""Refusing recipients on the cluster-wide suppression list (docs/suppression.md), and never mail because of it.

The list lives in the tracker (its index of the `suppressions` stream): recipients that hard-bounced as
invalid, for KUBEMTA_SUPPRESSION_TTL, and operators' entries. `SuppressionCheck.refusal(recipients)` asks a
tracker for the live entries among them (`TrackerClient.suppressed`, one request for all of them) and answers
a `Refusal` for each suppressed one:

    550 5.1.1 <bob@example.org>: Recipient address is suppressed after a hard bounce on 2026-12-05 (invalid_recipient)
    550 5.7.1 <bob@example.org>: Recipient address is suppressed by the operator (asked to stop)

The acceptance path calls it at RCPT for authenticated and relay-network senders (mail arriving from the internet
for local domains is not checked: those recipients are ours) and for every recipient of an API request.

Fail-open: when no tracker answers within KUBEMTA_SUPPRESSION_CHECK_TIMEOUT (0.5 s), or answers nonsense, the
recipients are accepted and counted as `kubemta_suppression_checks_total{result="unavailable"}` (the tracker
client logs it at most once a minute). A suppression list protects the sending reputation from repeated
bounces; it must never stop mail. Answers are kept for KUBEMTA_SUPPRESSION_CACHE_TTL seconds (10), suppressed
and not alike, in a bounded cache (`CACHE_SIZE` addresses, the oldest dropped first), so a session with many
RCPTs or a burst to one recipient asks once; an entry an operator removes may thus still refuse for that long on
an ingress that cached it. Unknown answers are not cached.

Nothing the tracker or the client sends goes into a reply unchecked: the address shown is the client's, reduced to
printable ASCII (anything else becomes `?`) and bounded; an operator's reason likewise (`MAX_REASON_SHOWN`); a
bounce class must look like one (`invalid_recipient`).
"""

import re
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from kubemta_common.events.suppression_entries import SuppressionEntry, SuppressionLookup
from kubemta_common.events.suppression_log import BOUNCE, normalize_address
from kubemta_ingress import metrics
from kubemta_ingress.acceptance import Refusal
from kubemta_ingress.rejections import Reason
from kubemta_ingress.settings import IngressSettings

CACHE_SIZE = 10000
"""Addresses whose answer one ingress keeps (about 1 MiB)."""
MAX_ADDRESS_SHOWN = 254
MAX_REASON_SHOWN = 100
BOUNCE_CLASS = re.compile(r"[a-z][a-z0-9_]{0,39}")
REJECTION_REASON = Reason.SUPPRESSED_RECIPIENT
"""The `kubemta_messages_rejected_total{reason}` of a suppressed recipient."""

_Cached = tuple[SuppressionEntry | None, float]


def _shown(text: str, limit: int) -> str:
    """`text` for a reply line: printable ASCII only (others `?`), without angle brackets, bounded."""
    cleaned = "".join(char if " " <= char <= "~" and char not in "<>" else "?" for char in text)
    return cleaned[:limit]


def suppressed_reply(recipient: str, entry: SuppressionEntry) -> str:
    """The SMTP reply refusing `recipient` because of `entry`."""
    shown = _shown(recipient, MAX_ADDRESS_SHOWN)
    if entry.source == BOUNCE:
        day = datetime.fromtimestamp(entry.since, UTC).strftime("%Y-%m-%d")
        bounce_class = entry.reason if BOUNCE_CLASS.fullmatch(entry.reason) else "invalid_recipient"
        return f"550 5.1.1 <{shown}>: Recipient address is suppressed after a hard bounce on {day} ({bounce_class})"
    reason = _shown(entry.reason, MAX_REASON_SHOWN).strip() or "no reason given"
    return f"550 5.7.1 <{shown}>: Recipient address is suppressed by the operator ({reason})"


class SuppressionCheck:
    """Refusals for suppressed recipients, from a tracker, cached, failing open."""

    def __init__(
        self,
        tracker: SuppressionLookup,
        *,
        timeout: float,
        cache_ttl: float,
        cache_size: int = CACHE_SIZE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._tracker = tracker
        self._timeout = timeout
        self._cache_ttl = cache_ttl
        self._cache_size = cache_size
        self._clock = clock
        self._cache: OrderedDict[str, _Cached] = OrderedDict()

    async def refusal(self, recipients: Sequence[str]) -> dict[str, Refusal]:
        """A Refusal for each suppressed recipient among `recipients` (keyed as given); none when the tracker does
        not answer in time (fail-open)."""
        now = self._clock()
        keys: dict[str, str] = {}
        for recipient in recipients:
            try:
                keys[recipient] = normalize_address(recipient)
            except ValueError:
                continue  # no address the list can hold (the ingress' own checks refuse it, if it must be)
        known: dict[str, SuppressionEntry | None] = {}
        for key in set(keys.values()):
            cached = self._cache.get(key)
            if cached is not None and cached[1] > now:
                known[key] = cached[0]
                metrics.SUPPRESSION_CACHE_HITS.inc()
        missing = sorted(set(keys.values()) - known.keys())
        unavailable: set[str] = set()
        if missing:
            answer = await self._tracker.suppressed(missing, within=self._timeout)
            if answer is None:
                unavailable.update(missing)
            else:
                for key in missing:
                    known[key] = answer.get(key)
                    self._remember(key, known[key], now)
        refusals: dict[str, Refusal] = {}
        for recipient, key in keys.items():
            if key in unavailable:
                metrics.SUPPRESSION_CHECKS.labels(result="unavailable").inc()
                continue
            entry = known.get(key)
            if entry is None:
                metrics.SUPPRESSION_CHECKS.labels(result="not_suppressed").inc()
                continue
            metrics.SUPPRESSION_CHECKS.labels(result="suppressed").inc()
            refusals[recipient] = Refusal(
                REJECTION_REASON,
                suppressed_reply(recipient, entry),
                fields={"recipient": _shown(recipient, MAX_ADDRESS_SHOWN), "suppression": _shown(entry.source, 16)},
            )
        return refusals

    def _remember(self, key: str, entry: SuppressionEntry | None, now: float) -> None:
        if self._cache_ttl <= 0:
            return
        self._cache[key] = (entry, now + self._cache_ttl)
        self._cache.move_to_end(key)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)


def build_suppression_check(settings: IngressSettings, tracker: SuppressionLookup | None) -> SuppressionCheck | None:
    """The check of KUBEMTA_SUPPRESSION_CHECK* over `tracker` (the ingress' TrackerClient); None when it is off or
    there is no tracker (KUBEMTA_TRACKER_URL empty): nothing is checked then."""
    if tracker is None or not settings.suppression_check:
        return None
    return SuppressionCheck(
        tracker, timeout=settings.suppression_check_timeout, cache_ttl=settings.suppression_cache_ttl
    )
