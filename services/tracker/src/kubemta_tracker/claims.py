"""Idempotency-Key claims: indexing the claim and release events, and deciding a claim in stream order.

A request of the ingress' HTTP API that carries an `Idempotency-Key` (draft-ietf-httpapi-idempotency-key-header)
asks the tracker to claim it (idempotency_api.py): the tracker appends an `idempotency_claim` event and, once it
indexed it, answers from the index. Every replica reads the same totally ordered `events` stream, so a decision
that depends only on what precedes the claim in the stream is the same on every replica: two ingress replicas
racing with the same key get one winner, whichever tracker replicas they ask.

The rule (`decide`), over the claims of one key in stream order (stream offset, then the position in the
batch): the first claim holds the key; a later claim takes it over when the holder was released before it (its
request failed and queued nothing) or is stale (the later claim is more than `claim_ttl` seconds younger: the
holder's ingress crashed, or its request is long past its publish timeout). A claim is answered `claimed` when it
holds the key after itself, else `in_progress` with the holder's fingerprint. Before that, a message queued with
the dedup key `idem:<key>` (the ingress sets it on the message of a claimed request; the `received`/`queued`
events carry it into the `dedup` table) answers `done` with its queue id.

Table `claims` (schema.py): one row per claim event (unique by event id, so a batch seen twice counts once: the
first copy's place in the stream is the claim's place), the release's place when one was seen. Values from
callers are bound parameters only.
"""

import sqlite3
from dataclasses import dataclass
from typing import Literal

from kubemta.v1 import events_pb2

DEDUP_PREFIX = "idem:"
"""The dedup key of a message queued for a claimed request: this + the claim's key."""

State = Literal["done", "claimed", "in_progress"]


@dataclass(frozen=True, slots=True)
class Claim:
    """One claim of a key, where it stands in the stream."""

    claimant: str
    fingerprint: str
    time: float
    place: tuple[int, int]
    """(stream offset, position in the batch)."""
    released: tuple[int, int] | None = None
    """Where its release stands in the stream (None: not released)."""


@dataclass(frozen=True, slots=True)
class ClaimAnswer:
    """What the tracker answers a claim (None: the claim itself is not in the index, e.g. pruned)."""

    state: State
    queue_id: str = ""
    fingerprint: str = ""


def index_claim(db: sqlite3.Connection, event: events_pb2.LifecycleEvent, place: tuple[int, int]) -> None:
    """Store an `idempotency_claim` event (a copy seen before keeps its first place)."""
    claim = event.idempotency_claim
    db.execute(
        "INSERT OR IGNORE INTO claims (event_id, key, claimant, fingerprint, time, stream_offset, position)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            event.event_id,
            claim.key,
            claim.claimant,
            claim.fingerprint,
            event.time.seconds + event.time.nanos / 1e9,
            *place,
        ),
    )


def index_release(db: sqlite3.Connection, event: events_pb2.LifecycleEvent, place: tuple[int, int]) -> None:
    """Mark the claims of (key, claimant) standing before `place` released there (the first release counts)."""
    release = event.idempotency_release
    db.execute(
        "UPDATE claims SET released_offset = ?, released_position = ? WHERE key = ? AND claimant = ?"
        " AND released_offset IS NULL AND (stream_offset, position) < (?, ?)",
        (*place, release.key, release.claimant, *place),
    )


def decide(claims: list[Claim], claimant: str, claim_ttl: float) -> tuple[Claim, Claim] | None:
    """(the claimant's first claim, the claim holding the key right after it) from the key's claims in stream
    order; None when the claimant has no claim among them. Only what stands before the claimant's claim counts."""
    holder: Claim | None = None
    for claim in claims:
        if (
            holder is None
            or (holder.released is not None and holder.released < claim.place)
            or claim.time - holder.time > claim_ttl
        ):
            holder = claim
        if claim.claimant == claimant:
            return claim, holder
    return None


def _claims(db: sqlite3.Connection, key: str, since: float) -> list[Claim]:
    rows = db.execute(
        "SELECT claimant, fingerprint, time, stream_offset, position, released_offset, released_position"
        " FROM claims WHERE key = ? AND time >= ? ORDER BY stream_offset, position",
        (key, since),
    )
    return [
        Claim(
            str(claimant),
            str(fingerprint),
            float(time),
            (int(offset), int(position)),
            None if released_offset is None else (int(released_offset), int(released_position)),
        )
        for claimant, fingerprint, time, offset, position, released_offset, released_position in rows
    ]


def answer(db: sqlite3.Connection, key: str, claimant: str, since: float, claim_ttl: float) -> ClaimAnswer | None:
    """The answer to `claimant`'s claim of `key`, counting messages queued and claims made at or after `since`;
    None when its claim is not in the index."""
    claims = _claims(db, key, since)
    row = db.execute(
        "SELECT queue_id FROM dedup WHERE dedup_key = ? AND received_at >= ? ORDER BY received_at LIMIT 1",
        (DEDUP_PREFIX + key, since),
    ).fetchone()
    if row is not None:
        kept = [claim for claim in claims if claim.released is None] or claims
        return ClaimAnswer("done", queue_id=str(row[0]), fingerprint=kept[0].fingerprint if kept else "")
    decided = decide(claims, claimant, claim_ttl)
    if decided is None:
        return None
    own, holder = decided
    if holder is own:
        return ClaimAnswer("claimed", fingerprint=own.fingerprint)
    return ClaimAnswer("in_progress", fingerprint=holder.fingerprint)
