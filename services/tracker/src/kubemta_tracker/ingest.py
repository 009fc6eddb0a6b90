"""Feeding the index from the streams: `events` (lifecycle events), `decisions` (operators' rules) and
`suppressions` (the suppression list's changes, suppression_index.py).

Each stream is read by a `StreamReader` of its own from the offset after the last one the index
stored, or from the stream's first offset when the index is new (a replica that starts with an
empty file replays the stream: the rebuild). Each batch the reader hands over is indexed in one
transaction together with its last offset (indexer.py), so a restart resumes exactly there and
a batch delivered twice indexes once. Barrier events found in a batch wake the requests waiting
for them (sync.py) after the batch is committed. A prune task drops what is older than the
stream's retention (`KUBEMTA_EVENTS_MAX_AGE`), so the index never outlives the truth, and the suppression
entries that expired. The change ids of a `suppressions` batch wake the operators' requests waiting for their own
change (suppression_sync.py). A replica is caught up once both `events` and `suppressions` are: a replica whose
suppression list is still replaying must not answer the ingress' checks.

Freshness without a barrier: the look-up of a client's retry (`GET /v1/duplicates/received`,
asked for every incoming message) reads the index as it is. An event reaches it at most
`FLUSH_SECONDS` (50 ms, the StreamReader's batch bound) after the broker delivered it, plus one
SQLite transaction, so an event the stream confirmed `INDEXED_WITHIN` (about 0.1 s) before the
look-up is normally indexed. The prune shares the writer thread and drops in slices of
`PRUNE_SLICE` rows (index.py), so a batch waits for one slice, not for the whole prune. A
replica still replaying, or a writer busy with a large batch, can be later (the look-up then
says "not found" and the message is queued again: at least once).
"""

import asyncio
import logging
import time

from kubemta_common.amqp.broker import Broker
from kubemta_common.amqp.streams import DECISIONS, DEFAULT_SUPPRESSION_TTL, EVENTS, SUPPRESSIONS
from kubemta_common.events.stream_reader import Offset, StreamReader, StreamRecord
from kubemta_tracker import metrics
from kubemta_tracker.index import Index
from kubemta_tracker.suppression_sync import AppliedChanges
from kubemta_tracker.sync import BarrierSync

logger = logging.getLogger(__name__)

INDEXED_WITHIN = 0.1
"""Seconds after its confirm by which an event is normally in the index (FLUSH_SECONDS plus a transaction)."""

PREFETCH = 2000
"""Stream records in flight to this replica (a record is one EventBatch of up to 500 events)."""


class Ingest:
    """Reads the streams into the index until cancelled (`run`); `caught_up` once the `events` and `suppressions`
    backlogs are in."""

    def __init__(
        self,
        broker: Broker,
        index: Index,
        barriers: BarrierSync,
        *,
        retention: float,
        prune_interval: float,
        applied: AppliedChanges | None = None,
        suppression_ttl: float = DEFAULT_SUPPRESSION_TTL,
    ) -> None:
        self._broker = broker
        self._applied = applied or AppliedChanges()
        self._suppression_ttl = suppression_ttl
        self._index = index
        self._barriers = barriers
        self._retention = retention
        self._prune_interval = prune_interval
        self.caught_up = asyncio.Event()
        self.events_reader: StreamReader | None = None

    async def _start_offset(self, stream: str) -> Offset:
        last = await self._index.offset(stream)
        if last is None:
            logger.info("the index has nothing of the %s stream: reading it from the start", stream)
            return "first"
        logger.info("the index holds the %s stream up to offset %d: resuming after it", stream, last)
        return last + 1

    async def run(self) -> None:
        """Read `events`, `decisions` and `suppressions` and prune, until cancelled."""
        events = StreamReader(
            self._broker, EVENTS, self._on_events, start=await self._start_offset(EVENTS), prefetch=PREFETCH
        )
        decisions = StreamReader(
            self._broker, DECISIONS, self._on_decisions, start=await self._start_offset(DECISIONS), prefetch=PREFETCH
        )
        suppressions = StreamReader(
            self._broker,
            SUPPRESSIONS,
            self._on_suppressions,
            start=await self._start_offset(SUPPRESSIONS),
            prefetch=PREFETCH,
        )
        self.events_reader = events
        tasks = [
            asyncio.create_task(events.run(), name="kubemta-tracker-events"),
            asyncio.create_task(decisions.run(), name="kubemta-tracker-decisions"),
            asyncio.create_task(suppressions.run(), name="kubemta-tracker-suppressions"),
            asyncio.create_task(self._prune(), name="kubemta-tracker-prune"),
            asyncio.create_task(
                self._follow((EVENTS, events), (SUPPRESSIONS, suppressions)), name="kubemta-tracker-caught-up"
            ),
        ]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _follow(self, *readers: tuple[str, StreamReader]) -> None:
        for name, reader in readers:
            await reader.caught_up.wait()
            logger.info("the index caught up with the %s stream (offset %s)", name, reader.last_offset)
        self.caught_up.set()

    async def _on_events(self, records: list[StreamRecord]) -> None:
        nonces = await self._index.index_events([(record.offset, record.body) for record in records])
        metrics.INDEXED_RECORDS.labels(stream=EVENTS).inc(len(records))
        metrics.STREAM_OFFSET.labels(stream=EVENTS).set(records[-1].offset)
        if nonces:
            self._barriers.seen(nonces)

    async def _on_decisions(self, records: list[StreamRecord]) -> None:
        await self._index.index_decisions([(record.offset, record.body) for record in records])
        metrics.INDEXED_RECORDS.labels(stream=DECISIONS).inc(len(records))
        metrics.STREAM_OFFSET.labels(stream=DECISIONS).set(records[-1].offset)

    async def _on_suppressions(self, records: list[StreamRecord]) -> None:
        change_ids = await self._index.index_suppressions([(record.offset, record.body) for record in records])
        metrics.INDEXED_RECORDS.labels(stream=SUPPRESSIONS).inc(len(records))
        metrics.STREAM_OFFSET.labels(stream=SUPPRESSIONS).set(records[-1].offset)
        if change_ids:
            self._applied.seen(change_ids)

    async def _prune(self) -> None:
        while True:
            try:
                dropped = await self._index.prune(time.time() - self._retention)
                expired = await self._index.prune_suppressions(time.time(), self._suppression_ttl)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("pruning the index failed")
            else:
                if dropped:
                    logger.info("pruned %d events older than the stream's retention from the index", dropped)
                if expired:
                    logger.info("pruned %d expired suppression entries from the index", expired)
            await asyncio.sleep(self._prune_interval)
