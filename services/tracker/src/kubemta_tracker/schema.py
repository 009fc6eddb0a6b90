"""The index's SQLite schema, its connections, and the states a job goes through.

Why SQLite: the index is a view of the `events` stream, rebuildable from it, so it needs no
durability or replication of its own; SQLite is embedded (no second server to run, secure and
back up), keeps one file per replica on the pod's disk (an emptyDir: a new pod replays the
stream), and answers the tracker's look-ups through B-tree indexes in well under a millisecond
at millions of rows (bench/tracker_index.py). WAL mode lets the one writer thread commit while
readers, each on its own connection, keep reading a consistent snapshot.

Tables: `messages` (one row per received message: envelope, client, headers), `recipients`
(address -> queue id, for find by recipient), `jobs` (one row per delivery job: domain,
recipients, its state from the latest event), `events` (every indexed event: the timeline, its
payload as serialized protobuf, unique by event_id, so a batch seen twice is indexed once),
`dedup` (the ingress' dedup keys), `held` (what sits on the `held` queue), `claims` (Idempotency-Key claims
and where they and their releases stand in the stream: claims.py), `suppressions` and `suppression_changes`
(the suppression list from its own stream: suppression_index.py) and `offsets` (the last stream offset
indexed per stream, written in the same transaction as the batch it ends).
"""

import sqlite3
from pathlib import Path

from kubemta_tracker import suppression_index

SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    queue_id TEXT PRIMARY KEY,
    message_id TEXT NOT NULL DEFAULT '',
    sender TEXT NOT NULL DEFAULT '' COLLATE NOCASE,
    recipients TEXT NOT NULL DEFAULT '[]',
    received_at REAL,
    size INTEGER NOT NULL DEFAULT 0,
    client_address TEXT NOT NULL DEFAULT '',
    client_helo TEXT NOT NULL DEFAULT '',
    authenticated_user TEXT NOT NULL DEFAULT '',
    trust TEXT NOT NULL DEFAULT '',
    listener TEXT NOT NULL DEFAULT '',
    headers BLOB NOT NULL DEFAULT x'',
    generated INTEGER NOT NULL DEFAULT 0,
    queued INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS messages_message_id ON messages (message_id);
CREATE INDEX IF NOT EXISTS messages_sender ON messages (sender, received_at);
CREATE INDEX IF NOT EXISTS messages_received_at ON messages (received_at);
CREATE INDEX IF NOT EXISTS messages_inbound ON messages (received_at) WHERE queued = 0;

CREATE TABLE IF NOT EXISTS recipients (
    recipient TEXT NOT NULL COLLATE NOCASE,
    queue_id TEXT NOT NULL,
    PRIMARY KEY (recipient, queue_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS recipients_queue_id ON recipients (queue_id);

CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    queue_id TEXT NOT NULL DEFAULT '',
    domain TEXT NOT NULL DEFAULT '' COLLATE NOCASE,
    recipients TEXT NOT NULL DEFAULT '[]',
    state TEXT NOT NULL,
    final INTEGER NOT NULL DEFAULT 0,
    state_time REAL NOT NULL,
    state_rank INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt REAL
);
CREATE INDEX IF NOT EXISTS jobs_queue_id ON jobs (queue_id);
CREATE INDEX IF NOT EXISTS jobs_open ON jobs (final, state);
CREATE INDEX IF NOT EXISTS jobs_state_time ON jobs (state_time);
CREATE INDEX IF NOT EXISTS jobs_domain ON jobs (domain);

CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    queue_id TEXT NOT NULL,
    job_id TEXT NOT NULL,
    time REAL NOT NULL,
    service TEXT NOT NULL,
    source TEXT NOT NULL,
    kind TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    details BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS events_queue_id ON events (queue_id, time);
CREATE INDEX IF NOT EXISTS events_job_id ON events (job_id, kind, attempt);
CREATE INDEX IF NOT EXISTS events_time ON events (time);

CREATE TABLE IF NOT EXISTS dedup (
    dedup_key TEXT NOT NULL,
    received_at REAL NOT NULL,
    queue_id TEXT NOT NULL,
    PRIMARY KEY (dedup_key, received_at, queue_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS dedup_received_at ON dedup (received_at);

CREATE TABLE IF NOT EXISTS held (
    key TEXT PRIMARY KEY,
    queue_id TEXT NOT NULL,
    job_id TEXT NOT NULL,
    reason TEXT NOT NULL,
    held_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS held_queue_id ON held (queue_id);

CREATE TABLE IF NOT EXISTS claims (
    event_id TEXT PRIMARY KEY,
    key TEXT NOT NULL,
    claimant TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    time REAL NOT NULL,
    stream_offset INTEGER NOT NULL,
    position INTEGER NOT NULL,
    released_offset INTEGER,
    released_position INTEGER
);
CREATE INDEX IF NOT EXISTS claims_key ON claims (key, stream_offset, position);
CREATE INDEX IF NOT EXISTS claims_time ON claims (time);

CREATE TABLE IF NOT EXISTS offsets (
    stream TEXT PRIMARY KEY,
    offset INTEGER NOT NULL
);
"""

# Job states (the contract's "Job/message state in the index"), in the order a job goes through them.
INBOUND = "inbound"
ROUTE = "route"
DELIVER = "deliver"
RESULTS = "results"
HELD = "held"
FINAL_STATES = ("delivered", "bounced", "expired", "deleted")
DONE = "done"
"""A message whose every job reached a final state."""

RANK = {ROUTE: 1, DELIVER: 2, RESULTS: 3, "delivered": 4, "bounced": 4, "expired": 4, "deleted": 4, HELD: 6}
"""Tie-breaker between two events of one job with the same time: the later stage wins, a deferral
(rank 5) wins over a final fate (the recipients left are retried), a hold over everything."""
RETRY_RANK = 5

OPEN_ORDER = (HELD, INBOUND, ROUTE, "retry", DELIVER, RESULTS)
"""A message with open jobs in several states shows the first of these (`retry` stands for retry.*)."""


def connect_writer(path: Path) -> sqlite3.Connection:
    """The writer's connection (WAL, schema created); used by one thread only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")  # a lost last commit is replayed from the stream
    connection.execute("PRAGMA temp_store=MEMORY")
    connection.execute("PRAGMA cache_size=-65536")
    connection.executescript(SCHEMA)
    connection.executescript(suppression_index.SCHEMA)
    connection.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    return connection


def connect_reader(path: Path) -> sqlite3.Connection:
    """A read-only connection for one reader thread."""
    connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None)
    connection.execute("PRAGMA query_only=ON")
    connection.execute("PRAGMA cache_size=-16384")
    return connection
