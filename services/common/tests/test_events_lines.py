"""The lifecycle events' log lines are written a window at a time (event_lines.py): together, after the window, in
the order the events were emitted, each at its event's own time; at once without an event loop, when the most are
kept, and when the event log closes."""

import asyncio
import io
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import pytest

from kubemta.v1 import events_pb2
from kubemta_common.events import event_lines
from kubemta_common.events.event_fields import message_fields
from kubemta_common.events.event_lines import MAX_KEPT, EventLines
from kubemta_common.logs import JsonFormatter, LoopFlushingHandler
from tests.harness.fake_events import offline_event_log

EVENT_TIMES = ("2026-01-02T03:04:05.678000", "2026-01-02T03:04:05.679000", "2026-01-02T03:04:06.001000")
"""The times the test's events carry (long past: a line written now at its event's time shows that time)."""


def delivered(queue_id: str, at: str | None = None) -> events_pb2.LifecycleEvent:
    event = events_pb2.LifecycleEvent(queue_id=queue_id, job_id=f"{queue_id}.1")
    event.delivered.domain = "example.net"
    if at is not None:
        event.time.FromDatetime(datetime.fromisoformat(at).replace(tzinfo=UTC))
    return event


class _SignallingStream(io.StringIO):
    """A StringIO that sets `wrote` on every write."""

    def __init__(self) -> None:
        super().__init__()
        self.wrote = asyncio.Event()

    def write(self, text: str) -> int:
        self.wrote.set()
        return super().write(text)


class Written:
    """What the services' own handler (setup_logging's: JSON, a write per event-loop turn) wrote."""

    def __init__(self) -> None:
        self.stream = _SignallingStream()
        self.handler = LoopFlushingHandler(self.stream)
        self.handler.setFormatter(JsonFormatter("worker"))

    def lines(self) -> list[dict[str, Any]]:
        self.handler.flush()
        return [json.loads(line) for line in self.stream.getvalue().splitlines()]


@contextmanager
def services_handler() -> Iterator[Written]:
    """The root logger with only the services' handler at INFO (pytest's capture handlers set aside)."""
    written = Written()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    root.handlers[:] = [written.handler]
    root.setLevel(logging.INFO)
    try:
        yield written
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


async def wait_for_lines(written: Written, count: int) -> list[dict[str, Any]]:
    async with asyncio.timeout(5):
        while len(lines := written.lines()) < count:
            written.stream.wrote.clear()
            await written.stream.wrote.wait()
    return lines


class Recording(logging.Handler):
    """Keeps the records it gets (a handler besides the services' own: log_fields takes the record's way)."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []
        self.got = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self.got.set()


async def test_the_lines_of_a_window_come_together_after_it_in_emit_order_each_at_its_events_time() -> None:
    log = offline_event_log(service="worker")
    with services_handler() as written:
        for number, at in enumerate(EVENT_TIMES):
            log.emit(delivered(f"Q{number}", at))
        assert written.lines() == []  # kept for the window, not written while the message is handled
        lines = await wait_for_lines(written, 3)
    assert [line["queue_id"] for line in lines] == ["Q0", "Q1", "Q2"]
    assert [line["time"] for line in lines] == [f"{at[:23]}+00:00" for at in EVENT_TIMES]
    assert all(line["message"] == "event=delivered" and line["job_id"] == line["queue_id"] + ".1" for line in lines)


async def test_an_event_stamped_by_the_log_is_written_at_its_stamp() -> None:
    log = offline_event_log(service="worker")
    event = delivered("QSTAMP")
    with services_handler() as written:
        log.emit(event)
        lines = await wait_for_lines(written, 1)
    stamped = event.time.ToDatetime(tzinfo=UTC).isoformat(timespec="milliseconds")
    assert lines[0]["time"] == stamped


async def test_closing_the_event_log_writes_what_it_kept() -> None:
    log = offline_event_log(service="worker")
    with services_handler() as written:
        log.emit(delivered("QCLOSE", EVENT_TIMES[0]))
        await log.close(0)
        assert [line["queue_id"] for line in written.lines()] == ["QCLOSE"]  # at once, not after the window


async def test_the_most_kept_lines_are_written_at_once() -> None:
    lines = EventLines(window=3600)  # only the count can write them in this test
    with services_handler() as written:
        for number in range(MAX_KEPT - 1):
            lines.add(delivered(f"Q{number}", EVENT_TIMES[0]))
        assert lines.kept == MAX_KEPT - 1
        assert written.lines() == []
        lines.add(delivered("QLAST", EVENT_TIMES[0]))
        assert lines.kept == 0
        queue_ids = [line["queue_id"] for line in written.lines()]
    assert queue_ids == [f"Q{number}" for number in range(MAX_KEPT - 1)] + ["QLAST"]


def test_without_an_event_loop_a_line_is_written_at_once() -> None:
    lines = EventLines()
    with services_handler() as written:
        lines.add(delivered("QSYNC", EVENT_TIMES[0]))
        assert [line["queue_id"] for line in written.lines()] == ["QSYNC"]
    assert lines.kept == 0


async def test_nothing_is_kept_when_the_events_logger_does_not_log_info() -> None:
    level = event_lines.logger.level
    event_lines.logger.setLevel(logging.WARNING)
    lines = EventLines()
    try:
        lines.add(delivered("QQUIET", EVENT_TIMES[0]))
        assert lines.kept == 0
    finally:
        event_lines.logger.setLevel(level)


async def test_a_line_taking_the_records_way_carries_its_events_time() -> None:
    lines = EventLines(window=0.001)
    recording = Recording()
    event_lines.logger.addHandler(recording)
    try:
        with services_handler():
            lines.add(delivered("QREC", EVENT_TIMES[2]))
            assert recording.records == []
            async with asyncio.timeout(5):
                await recording.got.wait()
    finally:
        event_lines.logger.removeHandler(recording)
    record = recording.records[0]
    expected = datetime.fromisoformat(EVENT_TIMES[2]).replace(tzinfo=UTC).timestamp()
    assert record.created == pytest.approx(expected, abs=1e-6)
    assert record.msecs == 1.0
    assert getattr(record, "queue_id") == "QREC"  # noqa: B009 - set through `extra`, not the log context


async def test_a_line_that_fails_costs_that_line_and_not_the_others(monkeypatch: pytest.MonkeyPatch) -> None:
    def failing_for_qbad(message: Any, leave_out: str = "") -> dict[str, Any]:
        if message.domain == "bad.example":
            raise ValueError("no fields")
        return message_fields(message, leave_out=leave_out)

    monkeypatch.setattr("kubemta_common.events.event_lines.message_fields", failing_for_qbad)
    lines = EventLines(window=3600)
    bad = delivered("QBAD", EVENT_TIMES[1])
    bad.delivered.domain = "bad.example"
    with services_handler() as written:
        for event in (delivered("QGOOD1", EVENT_TIMES[0]), bad, delivered("QGOOD2", EVENT_TIMES[2])):
            lines.add(event)
        assert lines.kept == 3
        lines.write()
        logged = written.lines()
    assert [line["queue_id"] for line in logged] == ["QGOOD1", None, "QGOOD2"]
    assert logged[1]["level"] == "error" and "delivered event" in logged[1]["message"]
