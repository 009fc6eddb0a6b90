"""log_fields: the line `logger.log(level, message, extra=fields)` writes, byte for byte, without a LogRecord when
the services' own handler (setup_logging's) is the only one on the way; the record's way whenever anything else is
(another handler such as pytest's capture, a filter, the text format, a disabled or non-propagating logger)."""

import asyncio
import io
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kubemta_common.logs import (
    _RESERVED,
    JsonFormatter,
    LoopFlushingHandler,
    TextFormatter,
    log_fields,
    message_context,
)

NOW = 1_765_000_000.123456
"""The time both ways see (a record's own time is time.time(); Python 3.13 reads time.time_ns())."""


@dataclass
class Logs:
    """The root logger with only a JSON LoopFlushingHandler writing to `stream`, records counted as they are made."""

    stream: io.StringIO
    handler: LoopFlushingHandler
    records: list[logging.LogRecord]

    def lines(self) -> list[str]:
        self.handler.flush()
        return self.stream.getvalue().split("\n")[:-1]  # not splitlines: a message may hold U+0085 or U+2028

    @contextmanager
    def alone(self) -> Iterator[None]:
        """Only this handler on the root logger: pytest adds its capture handlers around each test's call."""
        root = logging.getLogger()
        handlers = root.handlers[:]
        root.handlers[:] = [self.handler]
        try:
            yield
        finally:
            root.handlers[:] = handlers


@pytest.fixture
def logs(monkeypatch: pytest.MonkeyPatch) -> Iterator[Logs]:
    monkeypatch.setattr(time, "time", lambda: NOW)
    monkeypatch.setattr(time, "time_ns", lambda: int(NOW * 1e9))
    stream = io.StringIO()
    handler = LoopFlushingHandler(stream)
    handler.setFormatter(JsonFormatter("worker"))
    records: list[logging.LogRecord] = []
    factory = logging.getLogRecordFactory()

    def counting(*args: Any, **kwargs: Any) -> logging.LogRecord:
        made = factory(*args, **kwargs)
        records.append(made)
        return made

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.INFO)
    logging.setLogRecordFactory(counting)
    try:
        yield Logs(stream, handler, records)
    finally:
        logging.setLogRecordFactory(factory)
        root.setLevel(level)


def both_ways(logs: Logs, logger: logging.Logger, level: int, message: str, fields: dict[str, Any]) -> list[str]:
    """The lines log_fields and logger.log write for the same call, and the records log_fields made."""
    with logs.alone():
        log_fields(logger, level, message, dict(fields))
        made = len(logs.records)
        logger.log(level, message, extra=dict(fields))
    assert made == 0, "log_fields made a record while the services' handler was the only one"
    return logs.lines()


class Odd:
    def __str__(self) -> str:
        return "odd \u2603"


def test_an_event_line_is_the_records_line_without_a_record(logs: Logs) -> None:
    fields = {
        "event": "attempted",
        "queue_id": "Q1",
        "job_id": None,
        "message_id": "<m@example.net>",
        "attempt": 2,
        "details": {"recipients": [{"recipient": "a@b", "diagnostic": "550 \r\n\u00e9vil"}], "duration": 0.5},
        "odd": Odd(),
        "_private": "left out",
    }
    with message_context("CONTEXT", "CONTEXT.1"):
        fast, slow = both_ways(logs, logging.getLogger("kubemta.events"), logging.INFO, "event=attempted", fields)
    assert fast == slow
    assert '"job_id": null' in fast and '"odd": "odd \u2603"' in fast and "_private" not in fast


def test_the_context_gives_the_ids_the_fields_leave_out(logs: Logs) -> None:
    with message_context("CONTEXT", "CONTEXT.1"):
        fast, slow = both_ways(logs, logging.getLogger("kubemta.test"), logging.WARNING, "plain", {"n": 1})
    assert fast == slow
    assert '"queue_id": "CONTEXT", "job_id": "CONTEXT.1", "n": 1' in fast


identifiers = st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=12)
values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=8,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    fields=st.dictionaries(identifiers.filter(lambda key: key not in _RESERVED), values, max_size=6),
    context=st.tuples(st.none() | identifiers, st.none() | identifiers),
    level=st.sampled_from([logging.INFO, logging.WARNING, logging.ERROR, 25]),
    message=st.text(max_size=30),
)
def test_any_fields_make_the_records_line(
    logs: Logs, fields: dict[str, Any], context: tuple[str | None, str | None], level: int, message: str
) -> None:
    logs.stream.seek(0)
    logs.stream.truncate()
    logs.records.clear()
    queue_id, job_id = context
    with message_context(queue_id or "", job_id):
        fast, slow = both_ways(logs, logging.getLogger("kubemta.any"), level, message, fields)
    assert fast == slow


def test_a_level_below_the_loggers_or_the_handlers_writes_nothing(logs: Logs) -> None:
    with logs.alone():
        log_fields(logging.getLogger("kubemta.test"), logging.DEBUG, "quiet", {})
        logs.handler.setLevel(logging.WARNING)
        log_fields(logging.getLogger("kubemta.test"), logging.INFO, "quiet", {})
    assert logs.lines() == []


OBSTACLES = ["second handler", "logger filter", "handler filter", "text format", "own handler"]


@pytest.mark.parametrize("obstacle", OBSTACLES)
def test_anything_else_on_the_way_takes_the_records_way(logs: Logs, obstacle: str) -> None:
    logger = logging.getLogger(f"kubemta.obstacle.{obstacle.replace(' ', '-')}")
    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    def keep_all(record: logging.LogRecord) -> bool:
        seen.append(record)
        return True

    if obstacle == "logger filter":
        logger.addFilter(keep_all)
    elif obstacle == "handler filter":
        logs.handler.addFilter(keep_all)
    elif obstacle == "text format":
        logs.handler.setFormatter(TextFormatter())
    elif obstacle == "own handler":
        logger.addHandler(Keep())
    try:
        with logs.alone():
            if obstacle == "second handler":
                logging.getLogger().addHandler(Keep())
            log_fields(logger, logging.INFO, "event=queued", {"event": "queued"})
    finally:
        logger.handlers[:] = []
        logger.filters[:] = []
        logs.handler.filters[:] = []
    assert len(logs.records) == 1
    if obstacle == "text format":
        assert logs.lines()[0].endswith("event=queued")
    else:
        assert [record.getMessage() for record in seen] == ["event=queued"]


def test_a_disabled_or_non_propagating_logger_takes_the_records_way(logs: Logs) -> None:
    disabled = logging.getLogger("kubemta.disabled")
    disabled.disabled = True
    quiet = logging.getLogger("kubemta.quiet")
    quiet.propagate = False
    try:
        with logs.alone():
            log_fields(disabled, logging.INFO, "not written", {})
            log_fields(quiet, logging.INFO, "not written", {})  # no handler of its own: the last resort drops INFO
    finally:
        disabled.disabled = False
        quiet.propagate = True
    assert logs.lines() == []
    assert len(logs.records) == 1  # the disabled logger drops before making one


async def test_a_loop_turns_lines_go_out_in_one_write_with_the_records(logs: Logs) -> None:
    writes: list[str] = []
    original = logs.stream.write

    def counted(text: str) -> int:
        writes.append(text)
        return original(text)

    logs.stream.write = counted  # type: ignore[method-assign]
    with logs.alone():
        log_fields(logging.getLogger("kubemta.events"), logging.INFO, "event=received", {"event": "received"})
        logging.getLogger("kubemta.test").info("a record")
        log_fields(logging.getLogger("kubemta.events"), logging.INFO, "event=queued", {"event": "queued"})
        assert writes == []
        await asyncio.sleep(0)
    assert len(writes) == 1
    assert [line.split('"message": ')[1].split(",")[0] for line in writes[0].splitlines()] == [
        '"event=received"',
        '"a record"',
        '"event=queued"',
    ]
