"""The arrival time of the oldest message still in the queue, as a gauge for the dashboard and alerts.

`kubemta_tracker_oldest_open_message_timestamp_seconds` is the `received_at` of the oldest message this
replica's index holds as open: not yet queued by the queue-manager (and not deleted as a whole), or with a job
that is not final (delivered, bounced, expired or deleted); a held job is open. The same set as
`kubemta-admin queue summary` and `find --state open` (queries.py). A timestamp, not an age (STYLE.md: ages are
`time() - x` in PromQL), so the value does not go stale between two computations.

When nothing is open the gauge holds the time of the computation: no open message is older than that instant,
so `time() - min(...)` reads 0 (plus at most one interval) instead of "no data", which a dashboard could not
tell from a tracker that is down, and an alert on the age keeps a series to compare. Absent until the index has
caught up with the stream (a replica still replaying would report messages whose delivery it has not read yet)
and after a failed read (no number beats a wrong one); `min()` over the replicas ignores an absent one.

The query runs every `OLDEST_OPEN_INTERVAL` seconds on a worker thread with a connection of its own (the event
loop never waits on SQLite, index.py) and reads indexes only: the inbound part walks the partial index
`messages_inbound` from its oldest entry, the open jobs come from `jobs_open (final, state)`, each joined to
its message by primary key. So its cost follows what is queued, not the millions of finished messages the
index keeps for look-ups (test_oldest_open.py checks the plan).
"""

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from kubemta_tracker import schema
from kubemta_tracker.metrics import OLDEST_OPEN_MESSAGE, OptionalGauge

logger = logging.getLogger(__name__)

OLDEST_OPEN_INTERVAL = 15.0
"""Seconds between two computations: the usual scrape interval, and a few milliseconds of a thread each time."""

OLDEST_INBOUND = (
    "SELECT received_at FROM messages AS m WHERE queued = 0 AND received_at IS NOT NULL"
    " AND NOT EXISTS (SELECT 1 FROM events AS e WHERE e.queue_id = m.queue_id AND e.job_id = ''"
    " AND e.kind = 'deleted') ORDER BY received_at LIMIT 1"
)
"""The oldest message received but not queued by the queue-manager (a message deleted as a whole before it was
queued never will be)."""

OLDEST_OPEN_JOB = (
    "SELECT min(coalesce(m.received_at, j.state_time)) FROM jobs AS j"
    " LEFT JOIN messages AS m ON m.queue_id = j.queue_id WHERE j.final = 0"
)
"""The oldest arrival among messages with an open job (a job whose `received` event is not indexed, e.g. pruned,
counts from its latest state change, as in the queue summary)."""


def oldest_open_received_at(db: sqlite3.Connection) -> float | None:
    """The `received_at` (epoch seconds) of the oldest open message in the index `db`; None when none is open."""
    found = [row[0] for query in (OLDEST_INBOUND, OLDEST_OPEN_JOB) for row in db.execute(query) if row[0] is not None]
    return min(found, default=None)


def read_oldest_open(path: Path) -> float | None:
    """`oldest_open_received_at` of the index file `path`, on a read-only connection opened for this read (on the
    calling thread: a new one every interval costs far less than the query)."""
    with contextlib.closing(schema.connect_reader(path)) as db:
        return oldest_open_received_at(db)


async def export_oldest_open(
    path: Path,
    caught_up: asyncio.Event,
    *,
    gauge: OptionalGauge = OLDEST_OPEN_MESSAGE,
    interval: float = OLDEST_OPEN_INTERVAL,
    clock: Callable[[], float] = time.time,
) -> None:
    """Keep `gauge` at the oldest open message's arrival (the time of the read when none is open, never later
    than it: another host's clock may run ahead), from when `caught_up` is set until cancelled."""
    await caught_up.wait()
    while True:
        now = clock()
        try:
            oldest = await asyncio.to_thread(read_oldest_open, path)
        except sqlite3.Error as exc:
            logger.warning("could not read the oldest open message from the index: %r", exc)
            gauge.clear()
        else:
            gauge.set(now if oldest is None else min(oldest, now))
        await asyncio.sleep(interval)
