"""setup_logging: one JSON object per line, and no per-record look-ups the formats never show; the queue id
of the message being handled comes from its message_context, not from each call."""

import asyncio
import io
import json
import logging
from collections.abc import Iterator

import pytest

from kubemta_common.logs import JsonFormatter, TextFormatter, message_context, outside_message, setup_logging

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


class Keep(logging.Handler):
    """Keeps the records (and their JSON lines) logged while it is attached to the root logger."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.setFormatter(JsonFormatter("test"))

    def emit(self, record: logging.LogRecord) -> None:
        if record.name == "kubemta.test":
            self.records.append(record)

    def lines(self) -> list[dict[str, object]]:
        return [json.loads(self.format(record)) for record in self.records]


@pytest.fixture
def kept() -> Iterator[Keep]:
    keep = Keep()
    root = logging.getLogger()
    level = root.level
    root.addHandler(keep)
    root.setLevel(logging.DEBUG)
    try:
        yield keep
    finally:
        root.removeHandler(keep)
        root.setLevel(level)


async def test_messages_handled_concurrently_each_log_their_own_queue_id(kept: Keep) -> None:
    log = logging.getLogger("kubemta.test")
    both_started = asyncio.Barrier(2)

    async def handle(queue_id: str) -> None:
        with message_context(queue_id, f"{queue_id}.example.test"):
            log.info("start")
            await both_started.wait()  # the other message's context is set now too
            await asyncio.create_task(asyncio.to_thread(log.info, "in a task and a thread"))
            log.info("done")

    await asyncio.gather(handle("QA"), handle("QB"))
    lines = kept.lines()
    assert len(lines) == 6
    for line in lines:
        assert line["job_id"] == f"{line['queue_id']}.example.test"
    assert sorted(str(line["queue_id"]) for line in lines) == ["QA"] * 3 + ["QB"] * 3
    assert all(record.queue_id in ("QA", "QB") for record in kept.records)  # type: ignore[attr-defined]


async def test_a_record_outside_any_message_carries_no_queue_id(kept: Keep) -> None:
    log = logging.getLogger("kubemta.test")
    log.info("starting")
    with message_context("QIN"):
        log.info("inside")
        later = asyncio.get_running_loop().create_task(asyncio.sleep(0), context=outside_message())
        flush = asyncio.get_running_loop().create_task(_log_when_run(log), context=outside_message())
    log.info("after")
    await asyncio.gather(later, flush)
    outside, inside, after, flushed = kept.lines()
    assert inside["queue_id"] == "QIN" and "job_id" not in inside
    for line in (outside, after, flushed):
        assert line["queue_id"] is None and "job_id" not in line
    assert getattr(kept.records[0], "queue_id", None) is None
    assert TextFormatter().format(kept.records[0]).split()[3] == "-"
    assert TextFormatter().format(kept.records[1]).split()[3] == "QIN"


async def _log_when_run(log: logging.Logger) -> None:
    log.info("flushing")


def test_an_explicit_queue_id_wins_over_the_context(kept: Keep) -> None:
    with message_context("QCONTEXT", "JCONTEXT"):
        logging.getLogger("kubemta.test").info("dsn", extra={"queue_id": "QEXPLICIT", "dsn_queue_id": "QNEW"})
    [line] = kept.lines()
    assert (line["queue_id"], line["job_id"], line["dsn_queue_id"]) == ("QEXPLICIT", "JCONTEXT", "QNEW")


def test_the_http_client_logs_no_line_per_request(fresh_logging: io.StringIO) -> None:
    """The tracker client (httpx) would add an INFO line per duplicate check, doubling the ingress' lines."""
    setup_logging("ingress", level="DEBUG")
    for name in ("httpx", "httpcore"):
        assert not logging.getLogger(name).isEnabledFor(logging.INFO)
    assert logging.getLogger("kubemta_ingress.handler").isEnabledFor(logging.DEBUG)
