"""Reading the index: find, show (envelope, jobs, timeline), queue summary, held list, duplicate look-ups.

`IndexReader` methods are synchronous and run on a worker thread each (index.py), every thread
on its own read-only connection, so a slow query never holds up the event loop or the writer.
Every look-up goes through an index of schema.py; values from callers are bound parameters,
never SQL text, so a hostile Message-ID or address is just a string that matches nothing.
Results are plain dicts shaped as the API answers them (times as epoch seconds; api.py turns
them into RFC 3339).
"""

import json
import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf.json_format import MessageToDict
from google.protobuf.message import DecodeError, Message

from kubemta.v1 import events_pb2, message_pb2
from kubemta_tracker import claims, schema, suppression_index
from kubemta_tracker.claims import ClaimAnswer

Row = dict[str, Any]

FATE_RECORDS = ("delivered", "deferred", "bounced", "expired", "deleted")
"""Events that say the queue-manager decided a job's attempt (kind=fate of a duplicate check)."""


@dataclass(frozen=True, slots=True)
class FindQuery:
    """What to find; every given field must match (none given: the latest messages)."""

    queue_id: str | None = None
    message_id: str | None = None
    sender: str | None = None
    recipient: str | None = None
    since: float | None = None
    until: float | None = None
    domain: str | None = None
    """Messages with a job for this destination domain."""
    state: str | None = None
    """inbound, route, deliver, results, held, retry (any tier) or retry.<delay>: messages with a job (or
    themselves) in it; done: every job final; open: not done."""
    limit: int = 100


def message_state(queued: bool, job_states: list[tuple[str, bool]]) -> str:
    """A message's state from its jobs: `inbound` before the queue-manager queued it, `done` when every job is
    final, else the state of its least advanced open job (schema.OPEN_ORDER)."""
    if not queued and not job_states:
        return schema.INBOUND
    open_states = [state for state, final in job_states if not final]
    if not open_states:
        return schema.DONE
    for wanted in schema.OPEN_ORDER:
        for state in open_states:
            if state == wanted or (wanted == "retry" and state.startswith("retry")):
                return state
    return open_states[0]


class IndexReader:
    """Queries over the index file; thread-safe (one connection per calling thread)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()

    def _db(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = schema.connect_reader(self.path)
            self._local.db = db
        return db

    # -- find and show ---------------------------------------------------------------------------------------

    def find(self, query: FindQuery) -> list[Row]:
        """Messages matching `query`, newest first."""
        conditions: list[str] = []
        params: list[Any] = []
        if query.queue_id is not None:
            conditions.append("queue_id = ?")
            params.append(query.queue_id)
        if query.message_id is not None:  # as given, trimmed, or in the angle brackets it was sent with
            bare = query.message_id.strip()
            conditions.append("message_id IN (?, ?, ?)")
            params += [query.message_id, bare, bare if bare.startswith("<") else f"<{bare}>"]
        if query.sender is not None:
            conditions.append("sender = ?")
            params.append("" if query.sender == "<>" else query.sender)
        if query.recipient is not None:
            conditions.append("queue_id IN (SELECT queue_id FROM recipients WHERE recipient = ?)")
            params.append(query.recipient)
        if query.since is not None:
            conditions.append("received_at >= ?")
            params.append(query.since)
        if query.until is not None:
            conditions.append("received_at <= ?")
            params.append(query.until)
        if query.domain is not None:
            conditions.append("queue_id IN (SELECT queue_id FROM jobs WHERE domain = ?)")
            params.append(query.domain.rstrip("."))
        if query.state is not None:
            condition, values = _state_condition(query.state)
            conditions.append(condition)
            params += values
        where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        rows = self._db().execute(
            "SELECT queue_id, message_id, sender, recipients, received_at, size, queued FROM messages"
            f" {where} ORDER BY received_at DESC LIMIT ?",
            (*params, query.limit),
        )
        found = [
            {
                "queue_id": queue_id,
                "message_id": message_id,
                "sender": sender,
                "recipients": json.loads(recipients),
                "received_at": received_at,
                "size": size,
                "queued": bool(queued),
            }
            for queue_id, message_id, sender, recipients, received_at, size, queued in rows
        ]
        states = self._job_states([row["queue_id"] for row in found])
        for row in found:
            row["state"] = message_state(row.pop("queued"), states.get(row["queue_id"], []))
        return found

    def _job_states(self, queue_ids: list[str]) -> dict[str, list[tuple[str, bool]]]:
        states: dict[str, list[tuple[str, bool]]] = {}
        if not queue_ids:
            return states
        marks = ",".join("?" * len(queue_ids))
        rows = self._db().execute(f"SELECT queue_id, state, final FROM jobs WHERE queue_id IN ({marks})", queue_ids)
        for queue_id, state, final in rows:
            states.setdefault(queue_id, []).append((state, bool(final)))
        return states

    def message(self, queue_id: str) -> Row | None:
        """One message with its envelope, headers, jobs and timeline; None when the index knows nothing of it."""
        db = self._db()
        row = db.execute(
            "SELECT message_id, sender, recipients, received_at, size, client_address, client_helo,"
            " authenticated_user, trust, listener, headers, queued FROM messages WHERE queue_id = ?",
            (queue_id,),
        ).fetchone()
        timeline = self.timeline(queue_id)
        if row is None and not timeline:
            return None
        message: Row = {"queue_id": queue_id}
        if row is None:
            row = ("", "", "[]", None, 0, "", "", "", "", "", b"", 0)
        keys = (
            "message_id",
            "sender",
            "recipients",
            "received_at",
            "size",
            "client_address",
            "client_helo",
            "authenticated_user",
            "trust",
            "listener",
            "headers",
        )
        message.update(zip(keys, row, strict=False))
        message["recipients"] = json.loads(message["recipients"])
        message["headers"] = bytes(message["headers"]).decode("utf-8", "replace")
        jobs = [
            {
                "job_id": job_id,
                "domain": domain,
                "recipients": json.loads(recipients),
                "state": state,
                "attempts": attempts,
                "next_attempt": next_attempt,
                "final": bool(final),
            }
            for job_id, domain, recipients, state, attempts, next_attempt, final in db.execute(
                "SELECT job_id, domain, recipients, state, attempts, next_attempt, final FROM jobs"
                " WHERE queue_id = ? ORDER BY job_id",
                (queue_id,),
            )
        ]
        message["state"] = message_state(bool(row[11]), [(job["state"], job.pop("final")) for job in jobs])
        message["jobs"] = jobs
        message["timeline"] = timeline
        return message

    def timeline(self, queue_id: str) -> list[Row]:
        """Every event indexed for `queue_id`, in time order."""
        rows = self._db().execute(
            "SELECT time, service, source, kind, job_id, attempt, details FROM events WHERE queue_id = ?"
            " ORDER BY time, seq",
            (queue_id,),
        )
        return [
            {
                "time": time,
                "service": service,
                "source": source,
                "kind": kind,
                "job_id": job_id,
                "attempt": attempt,
                "details": payload_dict(kind, details),
            }
            for time, service, source, kind, job_id, attempt, details in rows
        ]

    # -- queue views -----------------------------------------------------------------------------------------

    def summary(self, now: float) -> Row:
        """Open messages per stage, open jobs per retry tier and per domain, each with the oldest arrival's age."""
        db = self._db()

        def age(oldest: float | None) -> float:
            return round(max(0.0, now - oldest), 3) if oldest is not None else 0.0

        stages: Row = {
            name: {"messages": 0, "oldest_seconds": 0.0}
            for name in (schema.INBOUND, schema.ROUTE, schema.DELIVER, schema.RESULTS, schema.HELD)
        }
        count, oldest = db.execute("SELECT count(*), min(received_at) FROM messages WHERE queued = 0").fetchone()
        stages[schema.INBOUND] = {"messages": count, "oldest_seconds": age(oldest)}
        retry: Row = {}
        open_jobs = (
            "SELECT j.state AS state, j.queue_id AS queue_id, j.domain AS domain,"
            " coalesce(m.received_at, j.state_time) AS arrival FROM jobs AS j LEFT JOIN messages AS m"
            " ON m.queue_id = j.queue_id WHERE j.final = 0"
        )
        for state, messages, jobs, oldest in db.execute(
            f"SELECT state, count(DISTINCT queue_id), count(*), min(arrival) FROM ({open_jobs}) GROUP BY state"
        ):
            if state.startswith("retry"):
                retry[state] = {"jobs": jobs, "oldest_seconds": age(oldest)}
            else:
                stages[state] = {"messages": messages, "oldest_seconds": age(oldest)}
        domains = [
            {"domain": domain, "jobs": jobs, "deferred": deferred, "oldest_seconds": age(oldest)}
            for domain, jobs, deferred, oldest in db.execute(
                f"SELECT domain, count(*), sum(state LIKE 'retry%'), min(arrival) FROM ({open_jobs})"
                " GROUP BY domain ORDER BY count(*) DESC, domain"
            )
        ]
        return {"stages": stages, "retry": retry, "domains": domains}

    def held(self) -> list[Row]:
        """What sits on the `held` queue (as the events say), oldest first."""
        rows = self._db().execute(
            "SELECT h.queue_id, h.job_id, coalesce(j.domain, ''), coalesce(m.sender, ''),"
            " coalesce(j.recipients, m.recipients, '[]'), h.reason, h.held_at FROM held AS h"
            " LEFT JOIN jobs AS j ON j.job_id = h.job_id AND h.job_id != ''"
            " LEFT JOIN messages AS m ON m.queue_id = h.queue_id ORDER BY h.held_at"
        )
        return [
            {
                "queue_id": queue_id,
                "job_id": job_id,
                "domain": domain,
                "sender": sender,
                "recipients": json.loads(recipients),
                "reason": reason,
                "held_at": held_at,
            }
            for queue_id, job_id, domain, sender, recipients, reason, held_at in rows
        ]

    # -- duplicate checks ------------------------------------------------------------------------------------

    def first_queue_id(self, dedup_key: str, since: float) -> str | None:
        """The queue id of the first message with `dedup_key` received at or after `since`."""
        row = (
            self._db()
            .execute(
                "SELECT queue_id FROM dedup WHERE dedup_key = ? AND received_at >= ? ORDER BY received_at LIMIT 1",
                (dedup_key, since),
            )
            .fetchone()
        )
        return None if row is None else str(row[0])

    def idempotency(self, key: str, claimant: str, since: float, claim_ttl: float) -> ClaimAnswer | None:
        """The answer to `claimant`'s claim of the Idempotency-Key `key` (claims.py); None when it is not indexed."""
        return claims.answer(self._db(), key, claimant, since, claim_ttl)

    # -- the suppression list (suppression_index.py) ----------------------------------------------------------

    def suppression(self, address: str, now: float) -> Row | None:
        """The live suppression entry of `address` (normalized), None when there is none."""
        return suppression_index.entry(self._db(), address, now)

    def suppressions(self, *, domain: str | None, after: str | None, limit: int, now: float) -> list[Row]:
        """A page of live suppression entries in address order."""
        return suppression_index.page(self._db(), domain=domain, after=after, limit=limit, now=now)

    def suppressed(self, addresses: list[str], now: float) -> list[Row]:
        """The live suppression entries among `addresses` (normalized)."""
        return suppression_index.live(self._db(), addresses, now)

    def delivered_recipients(self, job_id: str) -> list[Row]:
        """The recipients of `job_id` some attempt (or the queue-manager's fate) recorded as delivered."""
        found: dict[str, Row] = {}
        rows = self._db().execute(
            "SELECT kind, details FROM events WHERE job_id = ? AND kind IN ('attempted', 'delivered')"
            " ORDER BY time, seq",
            (job_id,),
        )
        for kind, details in rows:
            payload = events_pb2.Attempt() if kind == "attempted" else events_pb2.RecipientsFate()
            try:
                payload.ParseFromString(details)
            except DecodeError:
                continue
            for outcome in payload.recipients:
                if outcome.outcome == message_pb2.OUTCOME_DELIVERED and outcome.recipient not in found:
                    found[outcome.recipient] = MessageToDict(
                        outcome, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
                    )
        return list(found.values())

    def recorded(self, kind: str, *, queue_id: str, job_id: str, attempt: int | None) -> bool:
        """Whether an event of `kind` (queued | routed | fate) is indexed for the message or job (and attempt)."""
        kinds: Iterable[str] = FATE_RECORDS if kind == "fate" else (kind,)
        marks = ",".join("?" * len(tuple(kinds)))
        if kind == "queued":
            sql = f"SELECT 1 FROM events WHERE queue_id = ? AND kind IN ({marks})"
            params: list[Any] = [queue_id, *kinds]
        else:
            sql = f"SELECT 1 FROM events WHERE job_id = ? AND kind IN ({marks})"
            params = [job_id, *kinds]
        if attempt is not None:
            sql += " AND attempt = ?"
            params.append(attempt)
        return self._db().execute(sql + " LIMIT 1", params).fetchone() is not None


def _state_condition(state: str) -> tuple[str, list[Any]]:
    """The SQL condition on `messages` selecting those in `state` (FindQuery.state)."""
    open_job = "SELECT queue_id FROM jobs WHERE final = 0"
    if state == schema.INBOUND:
        return "queued = 0", []
    if state == "open":
        return f"(queued = 0 OR queue_id IN ({open_job}))", []
    if state == schema.DONE:
        return f"queued = 1 AND queue_id NOT IN ({open_job})", []
    if state == "retry":
        return f"queue_id IN ({open_job} AND state LIKE 'retry%')", []
    return f"queue_id IN ({open_job} AND state = ?)", [state]


def payload_dict(kind: str, details: bytes) -> dict[str, Any]:
    """A stored event payload as JSON-ready fields (proto field names; the headers of `received` left out)."""
    if kind == "decision":
        payload: Message = events_pb2.AdminDecision()
    elif kind in events_pb2.LifecycleEvent.DESCRIPTOR.fields_by_name:
        payload = getattr(events_pb2.LifecycleEvent(), kind).__class__()
    else:
        return {}
    try:
        payload.ParseFromString(details)
    except DecodeError:
        return {}
    fields = MessageToDict(payload, preserving_proto_field_name=True)
    fields.pop("headers", None)
    if kind == "decision":
        fields.pop("time", None)
    return fields
