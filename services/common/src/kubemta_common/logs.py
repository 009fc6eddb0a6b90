"""Logging set-up: one JSON object per line (or plain text), always with the queue id.

Call sites pass `extra={"queue_id": ...}` (and any other fields); the formatter puts
every extra field into the JSON object.
"""

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

_RESERVED = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
    "color_message",  # uvicorn's ANSI-coloured duplicate of the message
}


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object: time, level, service, logger, message and extras."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """Human-readable lines with the queue id after the level."""

    def format(self, record: logging.LogRecord) -> str:
        queue_id = getattr(record, "queue_id", "-")
        line = f"{self.formatTime(record)} {record.levelname:<7} {queue_id} {record.name}: {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def setup_logging(service: str, log_format: str = "json", level: str = "INFO") -> None:
    """Route all logging to stderr in the chosen format.

    Neither format shows where a call was made, or the thread, process or task that made
    it, so logging does not look them up: the Python logging HOWTO's "Optimization"
    switches. Looking up the caller (`sys._getframe` per record) was over a third of the
    logging cost on the queue-manager's hot path.
    """
    logging._srcfile = None  # no caller lookup (documented in the HOWTO)
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging.logAsyncioTasks = False  # type: ignore[attr-defined]  # Python 3.12+, not yet in typeshed
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service) if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("aiormq", "aio_pika", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def sanitize(text: str | bytes, limit: int = 200) -> str:
    """Client-supplied text made safe for a log line: printable, bounded."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    cleaned = "".join(ch if ch.isprintable() else f"\\x{ord(ch):02x}" for ch in text)
    return cleaned if len(cleaned) <= limit else cleaned[:limit] + "..."
