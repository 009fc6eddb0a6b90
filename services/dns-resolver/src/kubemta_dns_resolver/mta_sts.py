"""MTA-STS (RFC 8461): the `_mta-sts` TXT record, the policy text, MX matching, and the policy cache.

- §3.1: `_mta-sts.<domain>` holds exactly one TXT record starting with `v=STSv1`, with
  an `id` (1-32 letters and digits) that changes whenever the policy changes.
- §3.2: the policy is `key: value` lines: `version: STSv1`, `mode: enforce|testing|none`,
  one or more `mx:` patterns (not needed for mode none) and `max_age` (seconds, at most
  31557600). Unknown keys are ignored.
- §4.1: an MX host matches a pattern exactly, or `*.example.com` matches exactly one
  more label on the left (`mx1.example.com`, not `a.b.example.com` nor `example.com`).
- §5 / §5.1: a policy is cached until its max_age; the TXT record is checked before
  each use and a changed id fetches the policy again. A failed fetch (or a missing TXT
  record) keeps using the cached policy while it is valid; with nothing cached the
  domain is treated as having no policy. Fetch failures are not retried for
  `FETCH_RETRY_SECONDS` (§3.3 allows rate-limiting the fetches).
"""

import asyncio
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from kubemta_common.logs import outside_message
from kubemta_common.mta_sts_patterns import mx_matches
from kubemta_common.ttl_cache import TtlLruCache
from kubemta_dns_resolver.lookup import LookupResult, LookupStatus
from kubemta_dns_resolver.transports import normalize_domain

logger = logging.getLogger(__name__)

TXT_PREFIX = "_mta-sts."  # RFC 8461 §3.1
TXT_VERSION = "STSv1"
POLICY_VERSION = "STSv1"  # §3.2
MAX_AGE_LIMIT = 31557600  # §3.2: max_age is at most 31557600 seconds (about one year)
_ID_RE = re.compile(r"^[A-Za-z0-9]{1,32}$")  # §3.1: sts-id = 1*32(ALPHA / DIGIT)
TXT_MAX_TTL = 3600.0
"""Longest time a TXT answer is cached (the id is the change signal, so it must be re-read)."""
TXT_NEGATIVE_TTL = 300.0
"""Longest time an absent TXT record is cached."""
FETCH_RETRY_SECONDS = 300.0
"""No second fetch attempt for a domain within this time after a failed one."""


class StsMode(StrEnum):
    """§5: what a sender does with the policy."""

    ENFORCE = "enforce"
    TESTING = "testing"
    NONE = "none"


@dataclass(frozen=True, slots=True)
class StsPolicy:
    """A parsed policy, with the TXT id it was fetched for."""

    mode: StsMode
    mx: tuple[str, ...]
    max_age: int
    policy_id: str = ""

    def matches(self, hostname: str) -> bool:
        """True when `hostname` matches one of the mx patterns (§4.1)."""
        return mx_matches(hostname, self.mx)


def parse_sts_txt(records: Sequence[str]) -> str | None:
    """The policy id of the `_mta-sts` TXT records, or None when there is no valid one (§3.1).

    Records not starting with `v=STSv1` are ignored; more than one STSv1 record is an error
    (treated as no policy, as the RFC says).
    """
    candidates = [record for record in records if record.strip().startswith(f"v={TXT_VERSION}")]
    if len(candidates) != 1:
        return None
    fields: dict[str, str] = {}
    for part in candidates[0].split(";"):
        key, sep, value = part.strip().partition("=")
        if sep:
            fields.setdefault(key.strip(), value.strip())
    if fields.get("v") != TXT_VERSION:
        return None
    policy_id = fields.get("id", "")
    return policy_id if _ID_RE.match(policy_id) else None


def parse_sts_policy(text: str, policy_id: str = "") -> StsPolicy:
    """Parse a policy body (§3.2); raises ValueError when it is not a valid STSv1 policy."""
    fields: dict[str, str] = {}
    mx: list[str] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        key, sep, value = line.partition(":")
        if not sep:
            raise ValueError(f"invalid policy line {line.strip()[:80]!r}: expected key: value")
        key, value = key.strip(), value.strip()
        if key == "mx":
            mx.append(normalize_domain(value))
        else:
            fields.setdefault(key, value)
    if fields.get("version") != POLICY_VERSION:
        raise ValueError(f"unsupported policy version {fields.get('version')!r}: expected {POLICY_VERSION}")
    try:
        mode = StsMode(fields.get("mode", ""))
    except ValueError:
        raise ValueError(f"invalid policy mode {fields.get('mode')!r}: expected enforce, testing or none") from None
    max_age_text = fields.get("max_age", "")
    if not (max_age_text.isascii() and max_age_text.isdigit() and len(max_age_text) <= 10):
        raise ValueError(f"invalid max_age {max_age_text!r}: expected a number of seconds")
    max_age = min(int(max_age_text), MAX_AGE_LIMIT)
    if mode is not StsMode.NONE and not mx:
        raise ValueError(f"policy mode {mode.value} without any mx pattern")
    return StsPolicy(mode=mode, mx=tuple(mx), max_age=max_age, policy_id=policy_id)


class TxtLookup(Protocol):
    """The TXT query MTA-STS needs (implemented by lookup.DnspythonLookup)."""

    async def txt(self, name: str) -> LookupResult[str]:
        """The TXT records of `name`, each as one string (its character-strings joined)."""
        ...


class PolicyFetchError(Exception):
    """The policy could not be fetched over HTTPS; the message says why."""


class PolicyFetcher(Protocol):
    """Fetches the policy text of a domain (mta_sts_fetch.HttpsPolicyFetcher)."""

    async def fetch(self, domain: str) -> str:
        """The body of https://mta-sts.<domain>/.well-known/mta-sts.txt; raises PolicyFetchError."""
        ...


@dataclass(frozen=True, slots=True)
class _TxtAnswer:
    policy_id: str | None
    """None: no valid MTA-STS record."""


class MtaStsResolver:
    """The MTA-STS policy of a domain, from the cache or freshly fetched."""

    def __init__(
        self,
        lookup: TxtLookup,
        fetcher: PolicyFetcher,
        *,
        cache_size: int = 1000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lookup = lookup
        self._fetcher = fetcher
        self._policies: TtlLruCache[str, StsPolicy] = TtlLruCache(cache_size, clock)
        self._txt: TtlLruCache[str, _TxtAnswer] = TtlLruCache(cache_size, clock)
        self._failed: TtlLruCache[str, str] = TtlLruCache(cache_size, clock)
        self._in_flight: dict[str, asyncio.Task[StsPolicy | None]] = {}

    async def policy(self, domain: str) -> StsPolicy | None:
        """The policy to apply to mail for `domain`, or None when it has none (or none could be fetched)."""
        name = normalize_domain(domain)
        cached = self._policies.get(name)
        answer = await self._policy_id(name)
        if answer is None or answer.policy_id is None:
            return cached  # §5.1: no (readable) TXT record: a valid cached policy still applies
        if cached is not None and cached.policy_id == answer.policy_id:
            return cached
        if self._failed.get(name) is not None:
            return cached
        task = self._in_flight.get(name)
        if task is None:
            task = asyncio.create_task(self._refresh(name, answer.policy_id), context=outside_message())
            self._in_flight[name] = task
            task.add_done_callback(lambda _: self._in_flight.pop(name, None))
        fetched = await asyncio.shield(task)
        return fetched if fetched is not None else cached

    def fresh_for(self, domain: str) -> float:
        """Seconds until `policy(domain)` would look anything up again (0 when it would now): the least cache life
        left of its TXT answer, its cached policy and a failed fetch's pause."""
        name = normalize_domain(domain)
        txt = self._txt.get_with_ttl(name)
        if txt is None:
            return 0.0
        left = txt[1]
        for cached in (self._policies.get_with_ttl(name), self._failed.get_with_ttl(name)):
            if cached is not None:
                left = min(left, cached[1])
        return left

    async def _policy_id(self, name: str) -> _TxtAnswer | None:
        """The TXT answer (cached by its TTL); None when the look-up failed temporarily."""
        cached = self._txt.get(name)
        if cached is not None:
            return cached
        result = await self._lookup.txt(TXT_PREFIX + name)
        if result.status.temporary:
            logger.info("MTA-STS TXT look-up for %s failed: %s", name, result.detail, extra={"domain": name})
            return None
        if result.status is LookupStatus.OK:
            answer = _TxtAnswer(parse_sts_txt(result.records))
            ttl = min(result.ttl, TXT_MAX_TTL)
        else:
            answer = _TxtAnswer(None)
            ttl = min(result.ttl, TXT_NEGATIVE_TTL)
        self._txt.put(name, answer, ttl)
        return answer

    async def _refresh(self, name: str, policy_id: str) -> StsPolicy | None:
        try:
            text = await self._fetcher.fetch(name)
            policy = parse_sts_policy(text, policy_id)
        except Exception as exc:  # any failure of a fetch is a failed fetch (§5), never a crashed route job
            self._failed.put(name, str(exc), FETCH_RETRY_SECONDS)
            logger.warning(
                "MTA-STS policy of %s (id %s) could not be used: %s",
                name,
                policy_id,
                exc,
                extra={"domain": name, "mta_sts_id": policy_id},
            )
            return None
        self._policies.put(name, policy, float(policy.max_age))
        logger.info(
            "MTA-STS policy of %s: mode %s, mx %s, max_age %d (id %s)",
            name,
            policy.mode.value,
            ",".join(policy.mx),
            policy.max_age,
            policy_id,
            extra={"domain": name, "mta_sts_id": policy_id, "mta_sts_mode": policy.mode.value},
        )
        return policy
