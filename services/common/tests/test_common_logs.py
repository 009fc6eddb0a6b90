"""setup_logging: one JSON object per line, and no per-record look-ups the formats never show."""

import io
import json
import logging
from collections.abc import Iterator

import pytest

from kubemta_common.logs import setup_logging

SWITCHES = ("_srcfile", "logThreads", "logProcesses", "logMultiprocessing", "logAsyncioTasks")


@pytest.fixture
def fresh_logging() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    saved = {name: getattr(logging, name) for name in SWITCHES}
    try:
        yield io.StringIO()
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        for name, value in saved.items():
            setattr(logging, name, value)


def test_records_skip_caller_thread_process_and_task_lookups(fresh_logging: io.StringIO) -> None:
    setup_logging("queue-manager")
    [json_handler] = logging.getLogger().handlers
    assert isinstance(json_handler, logging.StreamHandler)
    json_handler.setStream(fresh_logging)
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logging.getLogger().addHandler(Keep())
    logging.getLogger("kubemta.test").info("accepted", extra={"queue_id": "Q1"})
    [record] = records
    assert record.funcName == "(unknown function)" and record.lineno == 0
    assert record.thread is None and record.process is None and record.taskName is None
    line = json.loads(fresh_logging.getvalue().splitlines()[-1])
    assert line["message"] == "accepted" and line["queue_id"] == "Q1" and line["service"] == "queue-manager"
