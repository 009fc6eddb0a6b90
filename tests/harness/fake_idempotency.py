"""A stand-in for the tracker's Idempotency-Key claims (`TrackerClient.claim_idempotency` / `release_idempotency`,
the ingress' `IdempotencyClaims`) in unit tests.

It keeps one in-memory "stream" of claims and releases and answers with the tracker's own rule
(kubemta_tracker.claims.decide is the reference: the first claim not released and not stale holds the key), with
a clock the test moves (`now`). `queued(key, queue_id)` says a message with dedup key `idem:<key>` was received.
`unavailable = True` makes every call raise TrackerUnavailable; `calls` keeps every call.
"""

from dataclasses import dataclass, field

from kubemta_common.events.tracker_client import IdempotencyAnswer, TrackerUnavailable


@dataclass
class _Claim:
    key: str
    fingerprint: str
    claimant: str
    time: float
    place: int
    released: int | None = None


@dataclass
class FakeIdempotencyTracker:
    """Claims answered in the order they are made (one replica's view of one stream)."""

    claim_ttl: float = 60.0
    now: float = 1_000.0
    unavailable: bool = False
    calls: list[tuple[str, ...]] = field(default_factory=list)
    _claims: list[_Claim] = field(default_factory=list)
    _done: dict[str, tuple[str, float]] = field(default_factory=dict)
    _place: int = 0

    def queued(self, key: str, queue_id: str) -> None:
        """A message for `key` (the key hash) was received: later claims are `done`."""
        self._done.setdefault(key, (queue_id, self.now))

    async def claim_idempotency(self, key: str, fingerprint: str, claimant: str, window: float) -> IdempotencyAnswer:
        self.calls.append(("claim", key, fingerprint, claimant, repr(window)))
        if self.unavailable:
            raise TrackerUnavailable("HTTP 503")
        self._place += 1
        own = _Claim(key, fingerprint, claimant, self.now, self._place)
        self._claims.append(own)
        since = self.now - window
        claims = [claim for claim in self._claims if claim.key == key and claim.time >= since]
        done = self._done.get(key)
        if done is not None and done[1] >= since:
            kept = [claim for claim in claims if claim.released is None] or claims
            return IdempotencyAnswer("done", queue_id=done[0], fingerprint=kept[0].fingerprint)
        holder: _Claim | None = None
        for claim in claims:
            if (
                holder is None
                or (holder.released is not None and holder.released < claim.place)
                or claim.time - holder.time > self.claim_ttl
            ):
                holder = claim
            if claim is own:
                break
        assert holder is not None
        if holder is own:
            return IdempotencyAnswer("claimed")
        return IdempotencyAnswer("in_progress", fingerprint=holder.fingerprint)

    async def release_idempotency(self, key: str, claimant: str) -> None:
        self.calls.append(("release", key, claimant))
        if self.unavailable:
            raise TrackerUnavailable("HTTP 503")
        self._place += 1
        for claim in self._claims:
            if claim.key == key and claim.claimant == claimant and claim.released is None:
                claim.released = self._place
