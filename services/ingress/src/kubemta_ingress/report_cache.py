"""The HTTP API's cache of domain reports: by normalised domain, for a TTL, at most `size` (least recently used go).

A report is kept `ttl` seconds from the moment its check finished; a cached answer costs
no DNS look-up and no rate budget (check_service.py). `size` 0 or `ttl` 0 keeps nothing.
"""

import time
from collections import OrderedDict
from dataclasses import dataclass

from kubemta_ingress.api_limits import Clock
from kubemta_mail_auth.domain_check import DomainReport


@dataclass(frozen=True, slots=True)
class CachedReport:
    """A report and its age in seconds."""

    report: DomainReport
    age: float


class ReportCache:
    """An LRU map domain -> (report, time stored) whose entries expire after `ttl` seconds."""

    def __init__(self, size: int, ttl: float, clock: Clock = time.monotonic) -> None:
        self._size = size
        self._ttl = ttl
        self._clock = clock
        self._entries: OrderedDict[str, tuple[DomainReport, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, domain: str) -> CachedReport | None:
        """The live report of `domain` (now the most recently used), None when absent or expired."""
        entry = self._entries.get(domain)
        if entry is None:
            return None
        report, stored = entry
        age = self._clock() - stored
        if age >= self._ttl or age < 0:
            del self._entries[domain]
            return None
        self._entries.move_to_end(domain)
        return CachedReport(report, age)

    def put(self, domain: str, report: DomainReport) -> None:
        """Keep `report` for `ttl` seconds, evicting the least recently used entries beyond `size`."""
        if self._size <= 0 or self._ttl <= 0:
            return
        self._entries[domain] = (report, self._clock())
        self._entries.move_to_end(domain)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)
