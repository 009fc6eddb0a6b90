"""The suppression list in the index: the `suppressions` stream's changes in, the live entry per address out.

The stream (kubemta_common.amqp.streams `SUPPRESSIONS`) holds `SuppressionChange` records: adds
(suppressed until `expires`) from the queue-manager's hard bounces and operators' commands, and
removes. Each replica applies them in stream order, one transaction per batch with the stream's
offset (indexer.py), so the latest change of an address in the stream wins on every replica alike,
whatever the writers' clocks say; a replica that starts with an empty file replays the stream
and ends with the same list (the stream keeps `KUBEMTA_SUPPRESSION_TTL`, as long as an entry can
live).

Tables: `suppressions` (one row per address with a live add: reason, source, actor, since, expires, and
for a bounce the queue id and the remote reply) and `suppression_changes` (the change ids applied, so
a change published twice, after a lost confirm, is applied once: a repeated add never undoes a later
remove). An entry whose `expires` passed does not count in any answer, and `prune` drops it and
the change ids older than the TTL. Values from callers are bound parameters only.
"""

import logging
import sqlite3
from collections.abc import Sequence
from typing import Any

from google.protobuf.message import DecodeError

from kubemta.v1 import events_pb2

logger = logging.getLogger(__name__)

Row = dict[str, Any]

SCHEMA = """
CREATE TABLE IF NOT EXISTS suppressions (
    address TEXT PRIMARY KEY,
    domain TEXT NOT NULL,
    since REAL NOT NULL,
    expires REAL NOT NULL,
    reason TEXT NOT NULL,
    source TEXT NOT NULL,
    actor TEXT NOT NULL,
    queue_id TEXT NOT NULL,
    diagnostic TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS suppressions_domain ON suppressions (domain, address);
CREATE INDEX IF NOT EXISTS suppressions_expires ON suppressions (expires);

CREATE TABLE IF NOT EXISTS suppression_changes (
    change_id TEXT PRIMARY KEY,
    time REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS suppression_changes_time ON suppression_changes (time);
"""

COLUMNS = "address, domain, since, expires, reason, source, actor, queue_id, diagnostic"


def _seconds(stamp: Any) -> float:
    return float(stamp.seconds + stamp.nanos / 1e9)


def apply_changes(db: sqlite3.Connection, records: Sequence[tuple[int, bytes]]) -> list[str]:
    """Apply `suppressions` records (in stream order) inside the caller's transaction; the change ids among
    them (applied now or before: a waiter for one of them may go on)."""
    seen: list[str] = []
    for offset, body in records:
        record = events_pb2.SuppressionChange()
        try:
            record.ParseFromString(body)
        except DecodeError:
            logger.warning("suppressions offset %d is no SuppressionChange (%d bytes): skipped", offset, len(body))
            continue
        if not record.change_id or not record.address:
            logger.warning("suppressions offset %d has no change id or address: skipped", offset)
            continue
        seen.append(record.change_id)
        new = db.execute(
            "INSERT OR IGNORE INTO suppression_changes (change_id, time) VALUES (?, ?)",
            (record.change_id, _seconds(record.time)),
        ).rowcount
        if not new:
            continue  # a copy of a change applied before: a later change may have overridden it
        address = record.address.lower()
        if not record.suppressed:
            db.execute("DELETE FROM suppressions WHERE address = ?", (address,))
            continue
        db.execute(
            f"INSERT INTO suppressions ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (address) DO UPDATE"
            " SET since = excluded.since, expires = excluded.expires, reason = excluded.reason,"
            " source = excluded.source, actor = excluded.actor, queue_id = excluded.queue_id,"
            " diagnostic = excluded.diagnostic",
            (
                address,
                address.rpartition("@")[2],
                _seconds(record.time),
                _seconds(record.expires),
                record.reason,
                record.source,
                record.actor,
                record.queue_id,
                record.diagnostic,
            ),
        )
    return seen


def prune(db: sqlite3.Connection, now: float, ttl: float) -> int:
    """Drop the entries expired at `now` and the change ids older than `ttl` (in the caller's transaction); the
    number of entries dropped."""
    dropped = db.execute("DELETE FROM suppressions WHERE expires <= ?", (now,)).rowcount
    db.execute("DELETE FROM suppression_changes WHERE time < ?", (now - ttl,))
    return int(dropped)


def _row(values: Sequence[Any]) -> Row:
    return dict(zip(COLUMNS.split(", "), values, strict=True))


def entry(db: sqlite3.Connection, address: str, now: float) -> Row | None:
    """The live entry of `address` (normalized), None when there is none."""
    found = db.execute(
        f"SELECT {COLUMNS} FROM suppressions WHERE address = ? AND expires > ?", (address, now)
    ).fetchone()
    return None if found is None else _row(found)


def page(db: sqlite3.Connection, *, domain: str | None, after: str | None, limit: int, now: float) -> list[Row]:
    """Live entries in address order after `after` (a page's last address), of `domain` when given; at most
    `limit`."""
    conditions = ["expires > ?"]
    values: list[Any] = [now]
    if domain is not None:
        conditions.append("domain = ?")
        values.append(domain)
    if after is not None:
        conditions.append("address > ?")
        values.append(after)
    rows = db.execute(
        f"SELECT {COLUMNS} FROM suppressions WHERE {' AND '.join(conditions)} ORDER BY address LIMIT ?",
        (*values, limit),
    )
    return [_row(values) for values in rows]


def live(db: sqlite3.Connection, addresses: Sequence[str], now: float) -> list[Row]:
    """The live entries among `addresses` (normalized)."""
    found: list[Row] = []
    unique = sorted(set(addresses))
    for start in range(0, len(unique), 500):  # below SQLite's bound-parameter limit
        chunk = unique[start : start + 500]
        marks = ", ".join("?" * len(chunk))
        rows = db.execute(
            f"SELECT {COLUMNS} FROM suppressions WHERE address IN ({marks}) AND expires > ?", (*chunk, now)
        )
        found.extend(_row(values) for values in rows)
    return found
