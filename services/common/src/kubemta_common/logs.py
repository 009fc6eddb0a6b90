"""Logging set-up: one JSON object per line (or plain text), always with the queue id.

The queue id is not passed by hand: each consumer sets it once per message with
`message_context(queue_id, job_id)`, a `contextvars` context, so every record logged while
that message is handled (in its task, in tasks and threads started from it) carries it.
A record outside any message has `queue_id` None. Call sites pass other fields as
`extra={...}` (an explicit `queue_id` or `job_id` there wins over the context); the JSON
formatter puts every extra field into the object.

asyncio copies the context into every task and callback when it is created, so a
long-lived task started while a message is handled (a batcher's flush, a pool's idle
timer) would keep that message's id: start it with `context=outside_message()`, and set
the id it works for inside it.
"""

import asyncio
import contextvars
import json
import logging
import math
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TextIO

_RESERVED = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
    "color_message",  # uvicorn's ANSI-coloured duplicate of the message
}


@dataclass(frozen=True, slots=True)
class LogContext:
    """The message a record belongs to: its queue id and, in the stages that handle jobs, the job id."""

    queue_id: str | None = None
    job_id: str | None = None


NO_MESSAGE = LogContext()
_current: contextvars.ContextVar[LogContext] = contextvars.ContextVar("kubemta_log_context", default=NO_MESSAGE)


@contextmanager
def message_context(queue_id: str, job_id: str | None = None) -> Iterator[LogContext]:
    """Every record logged inside the block (and in tasks started from it) carries `queue_id` (and `job_id`)."""
    context = LogContext(queue_id or None, job_id or None)
    token = _current.set(context)
    try:
        yield context
    finally:
        _current.reset(token)


def current_log_context() -> LogContext:
    """The message being handled here, or NO_MESSAGE."""
    return _current.get()


def outside_message() -> contextvars.Context:
    """A copy of the current context with no message in it: `create_task(..., context=outside_message())` for a
    task that outlives the message it was started from."""
    context = contextvars.copy_context()
    context.run(_current.set, NO_MESSAGE)
    return context


class _FromContext:
    """A record attribute read from the record's LogContext; a non-data descriptor, so the same key passed in
    `extra` (which logging puts into the record's __dict__) wins."""

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = name

    def __get__(self, record: "ContextLogRecord | None", owner: type | None = None) -> str | None:
        if record is None:
            return None
        value: str | None = getattr(record._log_context, self._name)
        return value


class ContextLogRecord(logging.LogRecord):
    """A LogRecord that remembers the message being handled where it was made (its `queue_id`, `job_id`)."""

    queue_id = _FromContext()
    job_id = _FromContext()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._log_context = _current.get()


def install_record_factory() -> None:
    """Make every record a ContextLogRecord (left alone if another factory was installed)."""
    if logging.getLogRecordFactory() is logging.LogRecord:
        logging.setLogRecordFactory(ContextLogRecord)


install_record_factory()  # on import: whoever sets a message context has imported this module


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object: time, level, service, logger, message, queue id (and job id) and extras.

    Every line is formatted, so the parts that are the same from line to line are made once: the JSON encoder
    (json.dumps with options builds one per call), the time up to the second, the level's name.
    """

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service
        self._second: tuple[float, str] = (-1.0, "")
        """The last second formatted and its text (one tuple: threads that log see a consistent pair)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = self._head(
            record.created,
            record.levelname,
            record.name,
            record.getMessage(),
            getattr(record, "queue_id", None),
            getattr(record, "job_id", None),
        )
        for key, value in record.__dict__.items():
            if key not in _RESERVED and key[0] != "_":
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return _encode(entry)

    def format_fields(self, created: float, level: int, name: str, message: str, fields: dict[str, Any]) -> str:
        """The line `format` writes for a record of logger `name` made now (in this context) by
        `logger.log(level, message, extra=fields)`; `fields` holds no key a LogRecord reserves (log_fields)."""
        context = _current.get()
        entry = self._head(
            created,
            logging.getLevelName(level),
            name,
            message,
            fields["queue_id"] if "queue_id" in fields else context.queue_id,
            fields["job_id"] if "job_id" in fields else context.job_id,
        )
        for key, value in fields.items():
            if key[0] != "_":
                entry[key] = value
        return _encode(entry)

    def _head(
        self, created: float, levelname: str, name: str, message: str, queue_id: str | None, job_id: str | None
    ) -> dict[str, Any]:
        """The keys every line starts with, in their order; `job_id` only when there is one."""
        entry: dict[str, Any] = {
            "time": self._time(created),
            "level": _LEVEL_NAMES.get(levelname) or levelname.lower(),
            "service": self.service,
            "logger": name,
            "message": message,
            "queue_id": queue_id,
        }
        if job_id is not None:
            entry["job_id"] = job_id
        return entry

    def _time(self, created: float) -> str:
        """`datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")`, its date and time to the
        second made once a second (rounded to microseconds half to even, as datetime does, then cut to ms)."""
        fraction, second = math.modf(created)
        micros = round(fraction * 1e6)
        if micros >= 1_000_000:
            second, micros = second + 1, micros - 1_000_000
        last, text = self._second
        if second != last:
            text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = (second, text)
        return f"{text}.{micros // 1000:03d}+00:00"


_encode = json.JSONEncoder(default=str, ensure_ascii=False).encode
"""What json.dumps(entry, default=str, ensure_ascii=False) does, without building an encoder per line."""
_LEVEL_NAMES = {name: name.lower() for name in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")}


class TextFormatter(logging.Formatter):
    """Human-readable lines with the queue id (`-` outside a message) after the level."""

    def format(self, record: logging.LogRecord) -> str:
        queue_id = getattr(record, "queue_id", None) or "-"
        line = f"{self.formatTime(record)} {record.levelname:<7} {queue_id} {record.name}: {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class LoopFlushingHandler(logging.StreamHandler[TextIO]):
    """A StreamHandler that writes the records of one event-loop turn with one write.

    Python's StreamHandler writes and flushes every record (stderr is unbuffered: one system call a line).
    Here a record logged in a thread with a running event loop is kept, and a flush scheduled with
    `call_soon` on that loop writes all kept records at once, in the order they were logged. A record of
    WARNING or above, or one from a thread with no running loop, is written at once, together with the kept
    ones before it, so a crash's last words are never held back. `flush()` and `close()` (which
    `logging.shutdown` calls at exit) write what is kept. Every access holds the handler's lock.
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__(stream)
        self._kept: list[str] = []
        self._scheduled_on: asyncio.AbstractEventLoop | None = None
        """The loop a flush is scheduled on, if any."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record) + self.terminator
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)
            return
        self.keep(text, record.levelno, record)

    def keep(self, text: str, level: int, record: logging.LogRecord | None = None) -> None:
        """Write the formatted line `text` (terminator included) as `emit` writes a record's (the caller holds the
        lock); `record` is the record it was formatted from, if any, for `handleError`."""
        self._kept.append(text)
        loop = asyncio._get_running_loop() if level < logging.WARNING else None
        if loop is not None and self._scheduled_on is loop:
            return
        if loop is not None:
            try:
                loop.call_soon(self._flush_soon, loop)
                self._scheduled_on = loop
                return
            except RuntimeError:  # the loop is closed
                pass
        try:
            self._write_kept()
        except RecursionError:
            raise
        except Exception:
            self.handleError(record if record is not None else logging.makeLogRecord({"msg": text.rstrip()}))

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]  # always set by Handler.__init__
            self._write_kept()

    def close(self) -> None:
        try:
            self.flush()
        finally:
            super().close()

    def _flush_soon(self, loop: asyncio.AbstractEventLoop) -> None:
        """The scheduled flush: writes what the loop's turn logged."""
        with self.lock:  # type: ignore[union-attr]
            if self._scheduled_on is loop:
                self._scheduled_on = None
            try:
                self._write_kept()
            except Exception:  # nowhere to report it: the stream itself failed
                pass

    def _write_kept(self) -> None:
        """Writes the kept records with one write and flushes the stream (the caller holds the lock)."""
        if self._kept:
            text = "".join(self._kept)
            self._kept.clear()
            self.stream.write(text)
        if self.stream and hasattr(self.stream, "flush"):
            self.stream.flush()


def log_fields(
    logger: logging.Logger, level: int, message: str, fields: dict[str, Any], *, created: float | None = None
) -> None:
    """`logger.log(level, message, extra=fields)`, and the same line, for less: when the record would reach only the
    handler `setup_logging` installs, with its JSON format, the line is formatted from `fields` and handed to that
    handler without a LogRecord (making one and passing it down the loggers was half a line's cost, and every
    lifecycle event is a line). Anything else in the way (another handler, a filter, the text format, a disabled
    or non-propagating logger, a reserved key in `fields`, a failure to format) takes the record's way.
    `created`: the line's time (seconds since the epoch) when it is not now (a line written after the fact)."""
    if not logger.isEnabledFor(level):
        return
    handler = _only_handler(logger, level)
    if handler is not None and _RESERVED.isdisjoint(fields):
        formatter = handler.formatter
        assert isinstance(formatter, JsonFormatter)  # _only_handler's condition
        at = time.time() if created is None else created
        try:
            text = formatter.format_fields(at, level, logger.name, message, fields) + handler.terminator
        except RecursionError:
            raise
        except Exception:  # the record's way formats it again and reports the failure (Handler.handleError)
            pass
        else:
            with handler.lock:  # type: ignore[union-attr]  # always set by Handler.__init__
                handler.keep(text, level)
            return
    if created is None:
        logger.log(level, message, extra=fields)
        return
    record = logger.makeRecord(logger.name, level, "(unknown file)", 0, message, (), None, extra=fields)
    record.created = created
    record.msecs = min(round(math.modf(created)[0] * 1e6) // 1000, 999) + 0.0  # microseconds first, as _time
    record.relativeCreated = (created - logging._startTime) * 1000  # type: ignore[attr-defined]
    logger.handle(record)


def _only_handler(logger: logging.Logger, level: int) -> "LoopFlushingHandler | None":
    """The one handler a record of `logger` at `level` would reach when it is a JSON LoopFlushingHandler on the root
    logger and no filter, other handler or disabled logger is on the way; else None."""
    if logger.disabled:
        return None
    current: logging.Logger | None = logger
    while current is not None:
        if current.filters:
            return None
        if current.handlers:
            if current.parent is not None or len(current.handlers) != 1:
                return None
            handler = current.handlers[0]
            if not isinstance(handler, LoopFlushingHandler) or not isinstance(handler.formatter, JsonFormatter):
                return None
            return handler if not handler.filters and level >= handler.level else None
        if not current.propagate:
            return None
        current = current.parent
    return None


def setup_logging(service: str, log_format: str = "json", level: str = "INFO") -> None:
    """Route all logging to stderr in the chosen format.

    Neither format shows where a call was made, or the thread, process or task that made
    it, so logging does not look them up: the Python logging HOWTO's "Optimization"
    switches. Looking up the caller (`sys._getframe` per record) was over a third of the
    logging cost on the queue-manager's hot path. The records of one event-loop turn are
    written together (LoopFlushingHandler).
    """
    logging._srcfile = None  # no caller lookup (documented in the HOWTO)
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging.logAsyncioTasks = False  # type: ignore[attr-defined]  # Python 3.12+, not yet in typeshed
    install_record_factory()
    handler = LoopFlushingHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service) if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for previous in root.handlers:
        previous.flush()  # a replaced LoopFlushingHandler writes what it kept
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("aiormq", "aio_pika", "uvicorn.access", "httpx", "httpcore"):  # httpx: one line per request
        logging.getLogger(noisy).setLevel(logging.WARNING)


def sanitize(text: str | bytes, limit: int = 200) -> str:
    """Client-supplied text made safe for a log line: printable, bounded."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    if not text.isprintable():  # checked in C first: printable text (the common case) has nothing to escape
        text = "".join(ch if ch.isprintable() else f"\\x{ord(ch):02x}" for ch in text)
    return text if len(text) <= limit else text[:limit] + "..."
