"""LoopFlushingHandler: the records of one event-loop turn are written with one write, in the order they were
logged, byte for byte what a StreamHandler writes; WARNING and above, records with no running loop and
records from other threads are written at once; flush, close and logging.shutdown write what is kept."""

import asyncio
import io
import logging
import subprocess
import sys
import threading
from pathlib import Path

from kubemta_common.logs import JsonFormatter, LoopFlushingHandler, setup_logging


class CountingStream(io.StringIO):
    """A StringIO that counts its writes."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


def message_handler(stream: io.StringIO) -> LoopFlushingHandler:
    """A LoopFlushingHandler writing each record's bare message to `stream`."""
    handler = LoopFlushingHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    return handler


def logger_to(handler: logging.Handler, name: str) -> logging.Logger:
    """A logger of its own that writes only to `handler`."""
    logger = logging.getLogger(f"kubemta.flush-test.{name}")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger


def test_one_turns_records_are_written_once_after_the_turn_in_order() -> None:
    stream = CountingStream()
    handler = message_handler(stream)
    logger = logger_to(handler, "turn")

    async def main() -> list[str]:
        for number in range(5):
            logger.info("line %d", number)
        seen = [stream.getvalue()]  # nothing yet: the turn is not over
        await asyncio.sleep(0)
        seen.append(stream.getvalue())
        return seen

    before, after = asyncio.run(main())
    assert before == ""
    assert after == "".join(f"line {n}\n" for n in range(5))
    assert stream.writes == 1


def test_the_bytes_are_those_of_a_stream_handler() -> None:
    kept, plain = io.StringIO(), io.StringIO()
    batched = LoopFlushingHandler(kept)
    reference = logging.StreamHandler(plain)
    for handler in (batched, reference):
        handler.setFormatter(JsonFormatter("ingress"))
    batched_logger, reference_logger = logger_to(batched, "bytes-a"), logger_to(reference, "bytes-b")
    reference_logger.name = batched_logger.name  # same logger name in both outputs

    async def main() -> None:
        for logger in (batched_logger, reference_logger):
            logger.info("accepted \u00e9 %s", "x", extra={"queue_id": "Q1", "size": 12})
            logger.debug("second")
            await asyncio.sleep(0)
            logger.warning("third")
            logger.info("fourth")

    asyncio.run(main())
    batched.flush()
    strip = [line.split('"level"', 1)[1] for line in plain.getvalue().splitlines()]
    assert [line.split('"level"', 1)[1] for line in kept.getvalue().splitlines()] == strip
    assert len(strip) == 4


def test_a_warning_is_written_at_once_with_the_kept_records_before_it() -> None:
    stream = io.StringIO()
    handler = message_handler(stream)
    logger = logger_to(handler, "warning")

    async def main() -> tuple[str, str]:
        logger.info("first")
        logger.critical("crash")
        seen = stream.getvalue()
        logger.info("after")
        return seen, stream.getvalue()

    at_warning, after = asyncio.run(main())
    assert at_warning == "first\ncrash\n"
    assert after == at_warning  # the info after it waits for the turn's end
    assert stream.getvalue() == "first\ncrash\nafter\n"


def test_records_outside_a_loop_are_written_at_once() -> None:
    stream = CountingStream()
    handler = message_handler(stream)
    logger = logger_to(handler, "no-loop")
    logger.info("one")
    assert stream.getvalue() == "one\n"
    logger.info("two")
    assert stream.getvalue() == "one\ntwo\n" and stream.writes == 2


def test_records_of_other_threads_are_written_at_once_and_keep_the_order() -> None:
    stream = io.StringIO()
    handler = message_handler(stream)
    logger = logger_to(handler, "threads")

    async def main() -> str:
        logger.info("loop 1")
        thread = threading.Thread(target=logger.info, args=("thread",))
        thread.start()
        thread.join(timeout=10)
        return stream.getvalue()

    seen = asyncio.run(main())
    assert seen == "loop 1\nthread\n"


def test_concurrent_threads_and_loops_lose_and_split_no_line() -> None:
    stream = io.StringIO()
    handler = message_handler(stream)
    logger = logger_to(handler, "concurrent")

    def plain(name: str) -> None:
        for number in range(300):
            logger.info("%s %d", name, number)

    def looping(name: str) -> None:
        async def main() -> None:
            for number in range(300):
                logger.info("%s %d", name, number)
                if number % 7 == 0:
                    await asyncio.sleep(0)

        asyncio.run(main())

    threads = [
        threading.Thread(target=target, args=(f"{target.__name__}{index}",))
        for index in range(3)
        for target in (plain, looping)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    handler.flush()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 6 * 300
    for name in {line.rsplit(" ", 1)[0] for line in lines}:
        numbers = [int(line.rsplit(" ", 1)[1]) for line in lines if line.rsplit(" ", 1)[0] == name]
        assert numbers == list(range(300))  # each writer's lines in order, none lost or doubled


def test_a_record_kept_when_the_loop_stops_is_written_by_flush_and_close() -> None:
    stream = io.StringIO()
    handler = message_handler(stream)
    logger = logger_to(handler, "stopped")
    loop = asyncio.new_event_loop()

    async def last_words() -> None:
        logger.info("last")
        loop.stop()

    loop.create_task(last_words())
    loop.run_forever()
    loop.close()  # the scheduled flush never ran
    assert stream.getvalue() == ""
    handler.close()
    assert stream.getvalue() == "last\n"


def test_a_new_loop_after_a_closed_one_still_flushes() -> None:
    stream = io.StringIO()
    handler = message_handler(stream)
    logger = logger_to(handler, "relooped")
    loop = asyncio.new_event_loop()

    async def log_and_stop() -> None:
        logger.info("first loop")
        loop.stop()

    loop.create_task(log_and_stop())
    loop.run_forever()
    loop.close()

    async def second() -> None:
        logger.info("second loop")
        await asyncio.sleep(0)

    asyncio.run(second())
    assert stream.getvalue() == "first loop\nsecond loop\n"


def test_the_process_writes_kept_records_at_exit(tmp_path: Path) -> None:
    script = tmp_path / "exit.py"
    script.write_text(
        "import asyncio, logging\n"
        "from kubemta_common.logs import setup_logging\n"
        "setup_logging('ingress', log_format='text')\n"
        "loop = asyncio.new_event_loop()\n"
        "async def main():\n"
        "    logging.getLogger('x').info('kept until exit')\n"
        "    loop.stop()\n"
        "loop.create_task(main())\n"
        "loop.run_forever()\n"
    )
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=True)
    assert result.stderr.rstrip().endswith("kept until exit")


def test_setup_logging_installs_the_loop_flushing_handler() -> None:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    switches = ("_srcfile", "logThreads", "logProcesses", "logMultiprocessing", "logAsyncioTasks")
    saved = {name: getattr(logging, name) for name in switches}
    try:
        setup_logging("ingress")
        [handler] = root.handlers
        assert isinstance(handler, LoopFlushingHandler) and handler.stream is sys.stderr
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        for name, value in saved.items():
            setattr(logging, name, value)
