"""Writing the index: stream records in, rows out (one thread, one connection, one transaction per batch).

`IndexWriter.index_events(records)` decodes each `events` record (an EventBatch), inserts every
event into `events` (INSERT OR IGNORE by event_id: a batch seen twice, after a reconnect or a
replay, is indexed once and changes no state twice) and applies what it says to `messages`,
`recipients`, `jobs`, `dedup` and `held`; Idempotency-Key claims and releases go to `claims` with their
place in the stream (claims.py), not into `events`; the last offset goes into `offsets` in the same
transaction, so the index and its resume point never disagree. A job's state follows its
latest event by time (ties: the later stage, schema.RANK), so batches of several services that
arrive out of order still end in the right state. Barrier events are not stored; their nonces
are returned for sync.py, and so are the event ids of claims and releases (each is its request's barrier).

`index_suppressions(records)` applies the `suppressions` stream's changes (suppression_index.py) and returns
their change ids (an operator's request waits for its own change: suppression_sync.py).

`index_decisions(records)` puts operators' decisions (the `decisions` stream) that name a queue
id into that message's timeline (kind `decision`).
"""

import contextlib
import json
import logging
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from google.protobuf.message import DecodeError
from google.protobuf.timestamp_pb2 import Timestamp

from kubemta.v1 import events_pb2, message_pb2
from kubemta_common.amqp.streams import DECISIONS, EVENTS, SUPPRESSIONS
from kubemta_tracker import claims, schema, suppression_index

logger = logging.getLogger(__name__)

Record = tuple[int, bytes]
"""(stream offset, body) of one stream message."""

FATE_KINDS = ("delivered", "deferred", "bounced", "expired")


def seconds(stamp: Timestamp) -> float:
    """A Timestamp as seconds since the epoch."""
    return stamp.seconds + stamp.nanos / 1e9


def _details(event: events_pb2.LifecycleEvent, kind: str) -> bytes:
    """The event's payload as stored: its serialized protobuf (decoded for a timeline only, queries.py)."""
    return getattr(event, kind).SerializeToString() if kind else b""


class IndexWriter:
    """The index's one writer (not thread-safe: one thread calls it)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = schema.connect_writer(path)
        self._held: set[str] = set()
        """The keys of the `held` table (small), so a job event looks it up only when it may be there."""
        self._load_held()

    def _load_held(self) -> None:
        self._held = {str(key) for (key,) in self._db.execute("SELECT key FROM held")}

    @contextlib.contextmanager
    def _held_kept(self) -> Iterator[None]:
        """Reload the held keys when the transaction fails (its changes to them were rolled back)."""
        try:
            yield
        except BaseException:
            self._load_held()
            raise

    def close(self) -> None:
        self._db.close()

    def offset(self, stream: str) -> int | None:
        """The last offset of `stream` indexed, None when nothing was."""
        row = self._db.execute("SELECT offset FROM offsets WHERE stream = ?", (stream,)).fetchone()
        return None if row is None else int(row[0])

    def index_events(self, records: Sequence[Record]) -> list[str]:
        """Index `events` records in one transaction; the barrier nonces they held."""
        nonces: list[str] = []
        with self._held_kept(), self._transaction(EVENTS, records) as db:
            for offset, body in records:
                batch = events_pb2.EventBatch()
                try:
                    batch.ParseFromString(body)
                except DecodeError:
                    logger.warning("events offset %d is no EventBatch (%d bytes): skipped", offset, len(body))
                    continue
                for position, event in enumerate(batch.events):
                    kind = event.WhichOneof("kind")
                    if kind == "barrier":
                        nonces.append(event.barrier.nonce)
                    elif kind == "idempotency_claim":
                        claims.index_claim(db, event, (offset, position))
                        nonces.append(event.event_id)  # the claim is its request's barrier (idempotency_api.py)
                    elif kind == "idempotency_release":
                        claims.index_release(db, event, (offset, position))
                        nonces.append(event.event_id)
                    else:
                        self._index_event(db, event)
        return nonces

    def index_decisions(self, records: Sequence[Record]) -> None:
        """Index `decisions` records (those naming a queue id join its timeline) in one transaction."""
        with self._transaction(DECISIONS, records) as db:
            for offset, body in records:
                decision = events_pb2.AdminDecision()
                try:
                    decision.ParseFromString(body)
                except DecodeError:
                    logger.warning("decisions offset %d is no AdminDecision: skipped", offset)
                    continue
                if not decision.selector.queue_id or not decision.decision_id:
                    continue
                db.execute(
                    "INSERT OR IGNORE INTO events (event_id, queue_id, job_id, time, service, source, kind, attempt,"
                    " details) VALUES (?, ?, '', ?, 'tracker', ?, 'decision', 0, ?)",
                    (
                        f"decision:{decision.decision_id}",
                        decision.selector.queue_id,
                        seconds(decision.time),
                        decision.actor,
                        body,
                    ),
                )

    def index_suppressions(self, records: Sequence[Record]) -> list[str]:
        """Apply `suppressions` records in one transaction; the change ids they held."""
        with self._transaction(SUPPRESSIONS, records) as db:
            return suppression_index.apply_changes(db, records)

    def prune_suppressions(self, now: float, ttl: float) -> int:
        """Drop expired suppression entries and change ids older than `ttl`, in one transaction; entries dropped."""
        with self._transaction(SUPPRESSIONS, ()) as db:  # no records: the stream's offset stays as it is
            return suppression_index.prune(db, now, ttl)

    def prune(self, cutoff: float, limit: int) -> tuple[int, bool]:
        """Drop up to `limit` messages received and up to `limit` rows of each other table written before `cutoff`
        (epoch seconds), in one transaction; (events dropped, whether more is left to drop). One slice at a time,
        so the batches queued for this thread meanwhile are indexed between two slices."""
        db = self._db
        more = False

        def sliced(deleted: int) -> int:
            nonlocal more
            more = more or deleted >= limit
            return deleted

        db.execute("BEGIN IMMEDIATE")
        try:
            old = [
                row
                for row in db.execute("SELECT queue_id FROM messages WHERE received_at < ? LIMIT ?", (cutoff, limit))
            ]
            sliced(len(old))
            for table in ("recipients", "jobs", "held", "messages"):
                db.executemany(f"DELETE FROM {table} WHERE queue_id = ?", old)
            sliced(
                db.execute(
                    "DELETE FROM jobs WHERE job_id IN (SELECT job_id FROM jobs WHERE state_time < ? LIMIT ?)",
                    (cutoff, limit),
                ).rowcount
            )
            sliced(
                db.execute(
                    "DELETE FROM dedup WHERE (dedup_key, received_at, queue_id) IN"
                    " (SELECT dedup_key, received_at, queue_id FROM dedup WHERE received_at < ? LIMIT ?)",
                    (cutoff, limit),
                ).rowcount
            )
            sliced(
                db.execute(
                    "DELETE FROM claims WHERE event_id IN (SELECT event_id FROM claims WHERE time < ? LIMIT ?)",
                    (cutoff, limit),
                ).rowcount
            )
            dropped = sliced(
                db.execute(
                    "DELETE FROM events WHERE seq IN (SELECT seq FROM events WHERE time < ? LIMIT ?)", (cutoff, limit)
                ).rowcount
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        finally:
            self._load_held()
        return dropped, more

    class _Tx:
        def __init__(self, db: sqlite3.Connection, stream: str, records: Sequence[Record]) -> None:
            self.db = db
            self.stream = stream
            self.last = max((offset for offset, _ in records), default=None)

        def __enter__(self) -> sqlite3.Connection:
            self.db.execute("BEGIN IMMEDIATE")
            return self.db

        def __exit__(self, kind: object, *_: object) -> None:
            if kind is not None:
                self.db.execute("ROLLBACK")
                return
            if self.last is not None:
                self.db.execute(
                    "INSERT INTO offsets (stream, offset) VALUES (?, ?) ON CONFLICT (stream) DO UPDATE SET"
                    " offset = max(offset, excluded.offset)",
                    (self.stream, self.last),
                )
            self.db.execute("COMMIT")

    def _transaction(self, stream: str, records: Sequence[Record]) -> "IndexWriter._Tx":
        return IndexWriter._Tx(self._db, stream, records)

    # -- one event -------------------------------------------------------------------------------------------

    def _index_event(self, db: sqlite3.Connection, event: events_pb2.LifecycleEvent) -> None:
        kind = event.WhichOneof("kind") or ""
        queue_id = event.queue_id
        if kind == "admin_action" and not queue_id:
            queue_id = event.admin_action.selector.queue_id
        time = seconds(event.time)
        inserted = db.execute(
            "INSERT OR IGNORE INTO events (event_id, queue_id, job_id, time, service, source, kind, attempt, details)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                event.event_id,
                queue_id,
                event.job_id,
                time,
                event.service,
                event.source,
                kind,
                event.attempt,
                _details(event, kind),
            ),
        ).rowcount
        if not inserted:
            return  # seen before: its effects are in the index already
        if kind == "received":
            self._received(db, event, time)
        job_id = event.job_id
        if kind == "queued":
            db.execute(
                "INSERT OR IGNORE INTO messages (queue_id, message_id) VALUES (?, ?)", (queue_id, event.message_id)
            )
            db.execute("UPDATE messages SET queued = 1 WHERE queue_id = ?", (queue_id,))
            if event.queued.dedup_key and event.queued.HasField("arrival_time"):  # the ingress may have died first
                db.execute(
                    "INSERT OR IGNORE INTO dedup (dedup_key, received_at, queue_id) VALUES (?, ?, ?)",
                    (event.queued.dedup_key, seconds(event.queued.arrival_time), queue_id),
                )
            for job in event.queued.jobs:
                self._job(db, job.job_id, queue_id, job.domain, schema.ROUTE, time, recipients=job.recipients)
        elif not job_id:
            if kind in ("held", "released", "deleted") and queue_id:
                self._message_hold(db, kind, event, time)
        elif kind == "routed":
            self._job(db, job_id, queue_id, event.routed.domain, schema.DELIVER, time)
        elif kind == "attempted":
            self._job(db, job_id, queue_id, event.attempted.domain, schema.RESULTS, time, attempts=event.attempt + 1)
        elif kind in FATE_KINDS:
            fate: events_pb2.RecipientsFate = getattr(event, kind)
            if kind == "deferred":
                retry = fate.retry_queue or "retry"
                next_attempt = seconds(fate.next_attempt) if fate.HasField("next_attempt") else None
                self._job(db, job_id, queue_id, fate.domain, retry, time, next_attempt=next_attempt)
            else:
                self._job(db, job_id, queue_id, fate.domain, kind, time)
        elif kind == "held":
            self._job(db, job_id, queue_id, "", schema.HELD, time)
            if db.execute("SELECT state FROM jobs WHERE job_id = ?", (job_id,)).fetchone()[0] != schema.HELD:
                return  # a later event (indexed first) moved it on already
            db.execute(
                "INSERT INTO held (key, queue_id, job_id, reason, held_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT (key)"
                " DO UPDATE SET reason = excluded.reason, held_at = excluded.held_at WHERE excluded.held_at >= held_at",
                (job_id, queue_id, job_id, event.held.reason, time),
            )
            self._held.add(job_id)
        elif kind == "released":
            self._job(db, job_id, queue_id, "", schema.ROUTE, time)
        elif kind == "deleted":
            self._job(db, job_id, queue_id, "", "deleted", time)

    def _received(self, db: sqlite3.Connection, event: events_pb2.LifecycleEvent, time: float) -> None:
        received = event.received
        arrival = seconds(received.arrival_time) if received.HasField("arrival_time") else time
        db.execute(
            "INSERT INTO messages (queue_id, message_id, sender, recipients, received_at, size, client_address,"
            " client_helo, authenticated_user, trust, listener, headers, generated) VALUES"
            " (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (queue_id) DO UPDATE SET"
            " message_id = excluded.message_id, sender = excluded.sender, recipients = excluded.recipients,"
            " received_at = excluded.received_at, size = excluded.size, client_address = excluded.client_address,"
            " client_helo = excluded.client_helo, authenticated_user = excluded.authenticated_user,"
            " trust = excluded.trust, listener = excluded.listener, headers = excluded.headers,"
            " generated = excluded.generated",
            (
                event.queue_id,
                event.message_id,
                received.sender,
                json.dumps(list(received.recipients), ensure_ascii=False),
                arrival,
                received.size,
                received.client_address,
                received.client_helo,
                received.authenticated_user,
                message_pb2.Trust.Name(received.trust) if received.trust in message_pb2.Trust.values() else "",
                received.listener,
                bytes(received.headers),
                int(received.generated),
            ),
        )
        db.executemany(
            "INSERT OR IGNORE INTO recipients (recipient, queue_id) VALUES (?, ?)",
            ((recipient, event.queue_id) for recipient in received.recipients),
        )
        if received.dedup_key and not received.generated:
            db.execute(
                "INSERT OR IGNORE INTO dedup (dedup_key, received_at, queue_id) VALUES (?, ?, ?)",
                (received.dedup_key, arrival, event.queue_id),
            )

    def _message_hold(self, db: sqlite3.Connection, kind: str, event: events_pb2.LifecycleEvent, time: float) -> None:
        """A hold, release or delete of a whole message (no job yet: e.g. a poison `inbound` message)."""
        if kind == "held":
            later = db.execute(
                "SELECT 1 FROM events WHERE queue_id = ? AND job_id = '' AND kind IN ('released', 'deleted')"
                " AND time >= ? LIMIT 1",
                (event.queue_id, time),
            ).fetchone()
            if later is not None:
                return  # released or deleted after this hold (indexed first)
            db.execute(
                "INSERT INTO held (key, queue_id, job_id, reason, held_at) VALUES (?, ?, '', ?, ?) ON CONFLICT (key)"
                " DO UPDATE SET reason = excluded.reason, held_at = excluded.held_at WHERE excluded.held_at >= held_at",
                (event.queue_id, event.queue_id, event.held.reason, time),
            )
            self._held.add(event.queue_id)
        elif event.queue_id in self._held:
            self._unhold(db, event.queue_id, time)

    def _job(
        self,
        db: sqlite3.Connection,
        job_id: str,
        queue_id: str,
        domain: str,
        state: str,
        time: float,
        *,
        recipients: Iterable[str] = (),
        attempts: int = 0,
        next_attempt: float | None = None,
    ) -> None:
        """Upsert a job; its state changes when this event is not older than the one that set it."""
        rank = schema.RETRY_RANK if state.startswith("retry") else schema.RANK[state]
        final = int(state in schema.FINAL_STATES)
        listed = list(recipients)
        newer = "(excluded.state_time, excluded.state_rank) >= (jobs.state_time, jobs.state_rank)"
        db.execute(
            "INSERT INTO jobs (job_id, queue_id, domain, recipients, state, final, state_time, state_rank, attempts,"
            " next_attempt) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (job_id) DO UPDATE SET"
            " queue_id = CASE WHEN jobs.queue_id = '' THEN excluded.queue_id ELSE jobs.queue_id END,"
            " domain = CASE WHEN jobs.domain = '' THEN excluded.domain ELSE jobs.domain END,"
            " recipients = CASE WHEN excluded.recipients != '[]' THEN excluded.recipients ELSE jobs.recipients END,"
            " attempts = max(jobs.attempts, excluded.attempts),"
            f" next_attempt = CASE WHEN {newer} THEN excluded.next_attempt ELSE jobs.next_attempt END,"
            f" state = CASE WHEN {newer} THEN excluded.state ELSE jobs.state END,"
            f" final = CASE WHEN {newer} THEN excluded.final ELSE jobs.final END,"
            f" state_rank = CASE WHEN {newer} THEN excluded.state_rank ELSE jobs.state_rank END,"
            f" state_time = CASE WHEN {newer} THEN excluded.state_time ELSE jobs.state_time END",
            (
                job_id,
                queue_id,
                domain,
                json.dumps(listed, ensure_ascii=False) if listed else "[]",
                state,
                final,
                time,
                rank,
                attempts,
                next_attempt,
            ),
        )
        if state != schema.HELD and job_id in self._held:
            self._unhold(db, job_id, time)

    def _unhold(self, db: sqlite3.Connection, key: str, time: float) -> None:
        if db.execute("DELETE FROM held WHERE key = ? AND held_at <= ?", (key, time)).rowcount:
            self._held.discard(key)
