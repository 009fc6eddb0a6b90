"""The tracker's index of the `events` stream, for the event loop: one writer thread, readers on threads.

Why SQLite on the pod's disk (schema.py says more): the stream is the truth and the index is a
view rebuildable from it, so an embedded store with no second server, one file per replica
and indexed look-ups in well under a millisecond at millions of rows is enough; a replica that
starts with an empty file replays the stream. Each replica indexes the whole stream itself,
so replicas scale out for reads without sharing anything.

The event loop never waits on SQLite: writes run on one dedicated thread (`IndexWriter`, one
transaction per stream batch), queries on worker threads with their own read-only
connections (`IndexReader`, WAL lets them read while the writer commits).
"""

import asyncio
import functools
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from kubemta_tracker.indexer import IndexWriter, Record
from kubemta_tracker.queries import IndexReader

PRUNE_SLICE = 1000
"""Rows per table a prune drops in one transaction: a few milliseconds of the writer thread (measured on an index
of 500,000 events: 72 slices dropped a day of them, 2 ms each in the median), where one transaction for all of
it held back the stream's batches, and so the duplicate look-ups' freshness, for as long as the whole prune."""


class Index:
    """The index file of this replica: `await` its writes and reads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kubemta-index-writer")
        self._writer: IndexWriter | None = None
        self.reader = IndexReader(path)

    async def open(self) -> None:
        """Open (create) the file on the writer thread."""
        self._writer = await self._write(IndexWriter, self.path)

    async def _write[T](self, call: Callable[..., T], *args: object) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(call, *args))

    def _the_writer(self) -> IndexWriter:
        if self._writer is None:
            raise RuntimeError("the index is not open")
        return self._writer

    async def offset(self, stream: str) -> int | None:
        """The last offset of `stream` indexed (None: nothing yet, the stream is read from its start)."""
        return await self._write(self._the_writer().offset, stream)

    async def index_events(self, records: Sequence[Record]) -> list[str]:
        """Index `events` records in one transaction; the barrier nonces among them."""
        return await self._write(self._the_writer().index_events, records)

    async def index_decisions(self, records: Sequence[Record]) -> None:
        """Index `decisions` records in one transaction."""
        await self._write(self._the_writer().index_decisions, records)

    async def index_suppressions(self, records: Sequence[Record]) -> list[str]:
        """Apply `suppressions` records in one transaction; the change ids among them."""
        return await self._write(self._the_writer().index_suppressions, records)

    async def prune_suppressions(self, now: float, ttl: float) -> int:
        """Drop the suppression entries expired at `now` (and change ids older than `ttl`); entries dropped."""
        return await self._write(self._the_writer().prune_suppressions, now, ttl)

    async def prune(self, cutoff: float, *, slice_rows: int = PRUNE_SLICE) -> int:
        """Drop what is older than `cutoff` (epoch seconds), `slice_rows` rows per table and transaction, so the
        stream's batches are indexed between two slices instead of waiting for the whole prune; the number of
        events dropped."""
        dropped = 0
        more = True
        while more:
            count, more = await self._write(self._the_writer().prune, cutoff, slice_rows)
            dropped += count
        return dropped

    async def read[T](self, query: Callable[..., T], *args: object, **kwargs: object) -> T:
        """Run an `IndexReader` query on a worker thread."""
        return await asyncio.to_thread(query, *args, **kwargs)

    async def close(self) -> None:
        """Close the writer (after the writes already queued) and stop its thread."""
        if self._writer is not None:
            await self._write(self._writer.close)
            self._writer = None
        self._executor.shutdown(wait=False)
