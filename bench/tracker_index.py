"""Benchmark of the tracker's index: ingest rate and query latencies at a million events (prints, no asserts).

Builds N synthetic lifecycle events (default 1,000,000: N/5 messages of five events each,
received -> queued -> routed -> attempted -> delivered, one in ten deferred instead), spread over
seven days, from 1,000 senders to 50,000 recipients, packed into stream records of 500 events
as the EventLog writes them and indexed 20 records per transaction into a temporary index file
(as the ingest does). Then it times each look-up the API makes, on a random sample: find by
queue id, Message-ID, sender, recipient and time range (limit 100), show (the message and its
timeline), the queue summary, and the duplicate checks. The issue asks for answers "within a
second" over the retention period.

    .venv/bin/python bench/tracker_index.py [-n EVENTS] [--queries 500]
"""

import argparse
import random
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from kubemta.v1 import events_pb2, message_pb2
from kubemta_tracker.indexer import IndexWriter
from kubemta_tracker.queries import FindQuery, IndexReader

EVENTS_PER_RECORD = 500
RECORDS_PER_TRANSACTION = 20
SPAN = 7 * 86400.0
SENDERS = 1000
RECIPIENTS = 50_000


def _stamp(event: events_pb2.LifecycleEvent, at: float) -> None:
    event.time.FromNanoseconds(int(at * 1e9))


def message_events(number: int, start: float, spacing: float) -> list[events_pb2.LifecycleEvent]:
    """The five events of synthetic message `number`."""
    queue_id = f"Q{number:015d}"
    job_id = f"{queue_id}.example{number % 500}.org"
    domain = job_id.split(".", 1)[1]
    at = start + spacing * number
    sender = f"sender{number % SENDERS}@example.com"
    recipient = f"user{number % RECIPIENTS}@{domain}"
    received = events_pb2.LifecycleEvent(
        event_id=f"{number:012d}r",
        received=events_pb2.Received(
            sender=sender,
            recipients=[recipient],
            size=10240,
            client_address="192.0.2.1",
            trust=message_pb2.TRUST_UNTRUSTED,
            headers=b"Subject: bench\r\n",
            dedup_key=f"{number:064x}",
            listener="smtp",
        ),
    )
    queued = events_pb2.LifecycleEvent(
        event_id=f"{number:012d}q",
        queued=events_pb2.Queued(jobs=[events_pb2.QueuedJob(job_id=job_id, domain=domain, recipients=[recipient])]),
    )
    outcome = events_pb2.RecipientOutcome(recipient=recipient, outcome=message_pb2.OUTCOME_DELIVERED, smtp_code=250)
    routed = events_pb2.LifecycleEvent(
        event_id=f"{number:012d}o", job_id=job_id, routed=events_pb2.Routed(domain=domain)
    )
    attempted = events_pb2.LifecycleEvent(
        event_id=f"{number:012d}a",
        job_id=job_id,
        attempted=events_pb2.Attempt(domain=domain, recipients=[outcome]),
    )
    fate = events_pb2.LifecycleEvent(event_id=f"{number:012d}f", job_id=job_id)
    if number % 10 == 0:
        fate.deferred.CopyFrom(events_pb2.RecipientsFate(domain=domain, retry_queue="retry.5m"))
    else:
        fate.delivered.CopyFrom(events_pb2.RecipientsFate(domain=domain, recipients=[outcome]))
    events = [received, queued, routed, attempted, fate]
    for step, event in enumerate(events):
        event.queue_id = queue_id
        event.message_id = f"<{queue_id}@example.com>"
        event.service = "bench"
        event.source = "bench/1"
        _stamp(event, at + step * 0.05)
    return events


def records(total: int, start: float) -> Iterator[tuple[int, bytes]]:
    """`total` events as stream records of EVENTS_PER_RECORD events (offset, EventBatch body)."""
    spacing = SPAN / max(1, total // 5)
    pending: list[events_pb2.LifecycleEvent] = []
    offset = 0
    for number in range(total // 5):
        pending.extend(message_events(number, start, spacing))
        if len(pending) >= EVENTS_PER_RECORD:
            yield offset, events_pb2.EventBatch(events=pending).SerializeToString()
            offset += 1
            pending = []
    if pending:
        yield offset, events_pb2.EventBatch(events=pending).SerializeToString()


def ingest(writer: IndexWriter, total: int, start: float) -> tuple[float, float]:
    """Index `total` events; the wall-clock and CPU seconds the indexing took (building the records not)."""
    wall = cpu = 0.0
    transaction: list[tuple[int, bytes]] = []
    for record in records(total, start):
        transaction.append(record)
        if len(transaction) == RECORDS_PER_TRANSACTION:
            wall, cpu = _timed(writer, transaction, wall, cpu)
            transaction = []
    if transaction:
        wall, cpu = _timed(writer, transaction, wall, cpu)
    return wall, cpu


def _timed(writer: IndexWriter, transaction: list[tuple[int, bytes]], wall: float, cpu: float) -> tuple[float, float]:
    began, began_cpu = time.perf_counter(), time.process_time()
    writer.index_events(transaction)
    return wall + time.perf_counter() - began, cpu + time.process_time() - began_cpu


def latency(name: str, query: Callable[[int], object], rounds: int, messages: int) -> None:
    """Time `query(random message number)` `rounds` times; print p50/p99/max in milliseconds."""
    rng = random.Random(name)
    samples = []
    for _ in range(rounds):
        number = rng.randrange(messages)
        began = time.perf_counter()
        query(number)
        samples.append((time.perf_counter() - began) * 1000)
    samples.sort()
    p50 = statistics.median(samples)
    p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
    print(f"  {name:34} p50 {p50:8.3f} ms   p99 {p99:8.3f} ms   max {samples[-1]:8.3f} ms")  # noqa: T201


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", "--events", type=int, default=1_000_000, help="events to index (default 1000000)")
    parser.add_argument("--queries", type=int, default=500, help="samples per query kind (default 500)")
    args = parser.parse_args()
    total = max(5, args.events - args.events % 5)
    messages = total // 5
    start = time.time() - SPAN
    with tempfile.TemporaryDirectory(prefix="kubemta-tracker-bench-") as directory:
        path = Path(directory) / "index.sqlite3"
        writer = IndexWriter(path)
        seconds, cpu = ingest(writer, total, start)
        size = sum(file.stat().st_size for file in Path(directory).iterdir())
        print(  # noqa: T201
            f"indexed {total:,} events ({messages:,} messages) in {seconds:.1f} s: {total / seconds:,.0f} events/s "
            f"({total / cpu:,.0f} events per CPU second), index {size / 2**20:,.0f} MiB ({EVENTS_PER_RECORD} events "
            f"per record, {RECORDS_PER_TRANSACTION} records per transaction)"
        )
        reader = IndexReader(path)
        rounds = args.queries

        def queue_id(number: int) -> str:
            return f"Q{number:015d}"

        def when(number: int) -> float:
            return start + SPAN * number / float(messages)

        print(f"query latency over {rounds} random samples each (one reader connection):")  # noqa: T201
        finds: dict[str, Callable[[int], object]] = {
            "find queue_id": lambda n: reader.find(FindQuery(queue_id=queue_id(n))),
            "find message_id": lambda n: reader.find(FindQuery(message_id=f"<{queue_id(n)}@example.com>")),
            "find sender (limit 100)": lambda n: reader.find(FindQuery(sender=f"sender{n % SENDERS}@example.com")),
            "find recipient (limit 100)": lambda n: reader.find(
                FindQuery(recipient=f"user{n % RECIPIENTS}@example{n % 500}.org")
            ),
            "find time range 10 min (limit 100)": lambda n: reader.find(FindQuery(since=when(n), until=when(n) + 600)),
            "find sender + time range 1 h": lambda n: reader.find(
                FindQuery(sender=f"sender{n % SENDERS}@example.com", since=when(n), until=when(n) + 3600)
            ),
            "show (message + timeline)": lambda n: reader.message(queue_id(n)),
            "dedup first_queue_id": lambda n: reader.first_queue_id(f"{n:064x}", start),
            "delivered_recipients": lambda n: reader.delivered_recipients(f"{queue_id(n)}.example{n % 500}.org"),
            "recorded fate": lambda n: reader.recorded(
                "fate", queue_id="", job_id=f"{queue_id(n)}.example{n % 500}.org", attempt=0
            ),
        }
        for name, query in finds.items():
            latency(name, query, rounds, messages)
        latency("queue summary", lambda _: reader.summary(time.time()), max(5, rounds // 50), messages)
        latency("held list", lambda _: reader.held(), max(5, rounds // 50), messages)
        writer.close()


if __name__ == "__main__":
    main()
