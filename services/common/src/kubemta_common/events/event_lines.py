"""The lifecycle events' log lines (`event=<kind>`), written a window at a time.

Each event a service emits is also one structured log line (unless KUBEMTA_LOG_EVENTS leaves its kind out). An
emitted event is kept, and the lines of every event emitted within `WINDOW` seconds are formatted and written
together, in the order the events were emitted, each with its event's own time (`LifecycleEvent.time`), not the
time it was written.

Why: a line formatted while its message is handled cost about twice what it cost formatted with the lines of the
other messages of its window. Measured on the whole pipeline (`make bench`'s 1 KiB workload, 20 sessions,
2026-12-06): the CPU time of one line (`time.thread_time` around it, one run each) was 31 µs in the ingress and 24
in the worker when written at once, 16 and 17 when written 20 ms at a time; at the end of each event-loop turn it
was 29 and 22, hardly less. All of kubemta then needed 1.77 and 1.74 CPU ms per delivered message against 1.84
and 1.89 for the code before (two runs of 2 repetitions each, alternated, 17:30–17:34 UTC) and delivered 873 and
891 messages a second against 845 and 817. That is more than the lines' own saving (about 0.06 ms of the 0.11 per
message): the rest of the message's path got cheaper too, presumably because less of the line code competes with
it for the processor's caches (not measured).

What this changes for a reader of the log: an event's line comes up to `WINDOW` after the lines logged around it
when it was emitted (the `time` field of each line is right; sort by it), and the lines of the last `WINDOW`
before a crash (SIGKILL, out of memory) are not written; `EventLog.close`, on every orderly stop, writes them.
"""

import asyncio
import logging

from kubemta.v1 import events_pb2
from kubemta_common.events.event_fields import message_fields
from kubemta_common.events.log_kinds import event_kind
from kubemta_common.logs import log_fields

logger = logging.getLogger("kubemta.events")

WINDOW = 0.02
"""Seconds an event's log line waits for the lines of the events emitted after it (measured: module docstring; a
50 ms window measured the same as 20 in two alternated pairs, 1.84 and 1.82 against 1.83 and 1.82 CPU ms per
message, so the shorter delay stays)."""
MAX_KEPT = 1000
"""Lines kept at most: the thousandth is written at once with the others (bounded memory at any rate)."""


class EventLines:
    """The log lines of one service's lifecycle events, kept and written `WINDOW` at a time."""

    def __init__(self, window: float = WINDOW) -> None:
        self._window = window
        self._kept: list[events_pb2.LifecycleEvent] = []
        """Events whose lines are not yet written, in the order they were emitted."""
        self._timer: asyncio.TimerHandle | None = None

    @property
    def kept(self) -> int:
        """Lines not yet written."""
        return len(self._kept)

    def add(self, event: events_pb2.LifecycleEvent) -> None:
        """Write `event`'s line with the others of its window (at once when no event loop runs in this thread, or
        when MAX_KEPT are kept). The event is not changed afterwards: its line is made from it when written."""
        if not logger.isEnabledFor(logging.INFO):
            return
        self._kept.append(event)
        if len(self._kept) >= MAX_KEPT:
            self.write()
            return
        if self._timer is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop in this thread: nothing would write it later
            self.write()
            return
        self._timer = loop.call_later(self._window, self.write)

    def write(self) -> None:
        """Write every kept line now, in the order the events were emitted."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        kept, self._kept = self._kept, []
        for event in kept:
            try:
                _line(event)
            except Exception:  # one line's failure costs that line, not the others of its window
                logger.exception("could not write the log line of a %s event", event_kind(event))


def _line(event: events_pb2.LifecycleEvent) -> None:
    """The event as one structured log line: `event=<kind>` with its fields, at the event's time (client text is
    escaped by the JSON formatter; the text formatter gets the kind and ids only)."""
    kind = event_kind(event)
    details = message_fields(getattr(event, kind), leave_out="headers") if kind else {}
    fields = {
        "event": kind,
        "queue_id": event.queue_id or None,
        "job_id": event.job_id or None,
        "message_id": event.message_id,
        "attempt": event.attempt,
        "details": details,
    }
    created = event.time.seconds + event.time.nanos / 1e9 if event.HasField("time") else None
    log_fields(logger, logging.INFO, f"event={kind}", fields, created=created)
