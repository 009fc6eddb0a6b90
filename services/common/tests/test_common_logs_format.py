"""JsonFormatter writes exactly the line it wrote before it kept its encoder, its level names and the time up to the
second between lines: the same keys in the same order, the same time text (rounding included), extras that JSON
cannot write as their str(), non-ASCII text as is, the exception."""

import json
import logging
import random
import sys
from datetime import UTC, datetime
from typing import Any

import pytest

from kubemta_common.logs import _RESERVED, ContextLogRecord, JsonFormatter, message_context


def reference(record: logging.LogRecord, service: str) -> str:
    """The line as the formatter built it before (a copy of its former code)."""
    entry: dict[str, Any] = {
        "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
        "level": record.levelname.lower(),
        "service": service,
        "logger": record.name,
        "message": record.getMessage(),
        "queue_id": getattr(record, "queue_id", None),
    }
    job_id = getattr(record, "job_id", None)
    if job_id is not None:
        entry["job_id"] = job_id
    for key, value in record.__dict__.items():
        if key not in _RESERVED and not key.startswith("_"):
            entry[key] = value
    if record.exc_info:
        entry["exception"] = logging.Formatter().formatException(record.exc_info)
    return json.dumps(entry, default=str, ensure_ascii=False)


def record(
    level: int, message: str, *args: object, extra: dict[str, Any] | None = None, exc_info: Any = None
) -> logging.LogRecord:
    """A record as a logger call makes it (the context's record factory), with `extra` set on it."""
    made = logging.getLogger("kubemta.test").makeRecord(
        "kubemta.test", level, "(unknown file)", 0, message, args, exc_info
    )
    made.__dict__.update(extra or {})
    return made


class Odd:
    def __str__(self) -> str:
        return "odd \u2603"


@pytest.mark.parametrize("level", [logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL, 5])
def test_a_line_is_the_line_the_formatter_wrote_before(level: int) -> None:
    formatter = JsonFormatter("queue-manager")
    with message_context("Q1", "Q1.1"):
        extra = {"event": "routed", "details": {"hosts": ["mx[192.0.2.1]:25"], "size": "12"}, "odd": Odd(), "n": 1.5}
        line = record(level, "routed %s via %s \u00e9\r\n", "Q1.1", "mx", extra=extra)
    assert formatter.format(line) == reference(line, "queue-manager")
    assert json.loads(formatter.format(line))["odd"] == "odd \u2603"
    outside = record(level, "plain")
    assert formatter.format(outside) == reference(outside, "queue-manager")


def test_a_line_with_an_exception_is_the_line_the_formatter_wrote_before() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        line = record(logging.ERROR, "failed", exc_info=sys.exc_info())
    assert formatter_line(line) == reference(line, "ingress")


def formatter_line(line: logging.LogRecord) -> str:
    return JsonFormatter("ingress").format(line)


def test_the_time_is_written_as_datetime_wrote_it_rounding_included() -> None:
    formatter = JsonFormatter("x")
    generator = random.Random(17)
    stamps = [generator.uniform(1.6e9, 2.0e9) for _ in range(20000)]
    stamps += [1700000000.9995, 1700000000.0005, 1700000000.9999995, 1700000000.9999994, 1700000001.0, 1700000059.99999]
    stamps += sorted(stamps[:50])  # consecutive lines within and across seconds
    for stamp in stamps:
        assert formatter._time(stamp) == datetime.fromtimestamp(stamp, UTC).isoformat(timespec="milliseconds"), stamp


def test_records_made_by_the_logging_machinery_format_the_same() -> None:
    seen: list[tuple[str, str]] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append((self.format(record), reference(record, "svc")))

    handler = Keep()
    handler.setFormatter(JsonFormatter("svc"))
    logger = logging.getLogger("kubemta.test.format")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        with message_context("Q9"):
            logger.info("event=%s", "queued", extra={"event": "queued", "queue_id": "Q10", "attempt": 0})
        logger.warning("no message")
    finally:
        logger.removeHandler(handler)
    assert len(seen) == 2 and all(mine == theirs for mine, theirs in seen)
    assert isinstance(logging.getLogRecordFactory()("n", 20, "", 0, "m", (), None), ContextLogRecord)
