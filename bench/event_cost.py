"""`python -m bench.event_cost`: CPU microseconds per lifecycle event (issue 17), without a broker.

For the five events one relayed message writes (received, queued, routed, attempted, delivered), shaped as
the services build them, it measures the process CPU time (time.process_time) per event of:

- `log line`: the event's structured log line alone (event_lines' `_line`), formatted by the services'
  JsonFormatter and written to BENCH_EVENT_LOG (/dev/null) as the services write to stderr;
- `log record`: one ordinary `logger.info("...", extra=...)` line of a service, the same way;
- `emit`: `EventLog.emit` (stamp, log line, serialise, buffer), its buffer emptied between rounds;
- `record`: `await EventLog.record` one at a time, each its own batch, on a stand-in channel whose publish
  returns at once (the emitter's own cost: batch encoding, AMQP message, confirm bookkeeping; not the broker);
- `record x100`: 100 `record`s awaited together (group commit: one batch for all of them).

Options: BENCH_EVENT_ROUNDS (20000 events per figure), BENCH_EVENT_LOG (/dev/null). No assertion: figures.
"""

import asyncio
import logging
import os
import sys
import time
from collections.abc import Callable
from typing import cast

import uvloop

from kubemta.v1 import events_pb2, message_pb2
from kubemta_common.amqp.broker import Broker
from kubemta_common.events.emitter import EventLog
from kubemta_common.events.event_lines import _line
from kubemta_common.logs import message_context, setup_logging
from kubemta_common.timestamps import now_timestamp

HEADERS = (
    b"Received: from client.example (client.example [192.0.2.10])\r\n\tby mx.kubemta.test with ESMTP id 4F2A9C1B\r\n"
    b"From: Alice <alice@example.com>\r\nTo: bob@example.net\r\nSubject: a test message of about one KiB\r\n"
    b"Message-ID: <20240101120000.12345@example.com>\r\nDate: Mon, 1 Jan 2024 12:00:00 +0000\r\n"
)


def events() -> list[events_pb2.LifecycleEvent]:
    """One relayed message's five events, with the fields the services set."""
    queue_id, job_id, message_id = "4F2A9C1B0D3E", "4F2A9C1B0D3E.1", "<20240101120000.12345@example.com>"
    received = events_pb2.LifecycleEvent(queue_id=queue_id, message_id=message_id)
    received.time.CopyFrom(now_timestamp())
    received.received.sender = "alice@example.com"
    received.received.recipients.append("bob@example.net")
    received.received.size = 1024
    received.received.client_address = "192.0.2.10"
    received.received.client_helo = "client.example"
    received.received.trust = message_pb2.TRUST_RELAY_NETWORK
    received.received.arrival_time.CopyFrom(received.time)
    received.received.headers = HEADERS
    received.received.dedup_key = "ab" * 32
    received.received.listener = "smtp"
    queued = events_pb2.LifecycleEvent(queue_id=queue_id, message_id=message_id)
    queued.queued.dedup_key = "ab" * 32
    queued.queued.arrival_time.CopyFrom(received.time)
    queued.queued.jobs.add(job_id=job_id, domain="example.net", recipients=["bob@example.net"])
    job = events_pb2.LifecycleEvent(queue_id=queue_id, message_id=message_id, job_id=job_id, attempt=0)
    routed = events_pb2.LifecycleEvent()
    routed.CopyFrom(job)
    routed.routed.domain = "example.net"
    routed.routed.kind = message_pb2.TRANSPORT_KIND_SMTP
    routed.routed.source = "mx"
    routed.routed.hosts.append("mx1.example.net[198.51.100.25]:25")
    routed.routed.tls_policy = message_pb2.TLS_POLICY_MAY
    routed.routed.tls_policy_source = "default"
    routed.routed.provider = "other"
    attempted = events_pb2.LifecycleEvent()
    attempted.CopyFrom(job)
    attempted.attempted.domain = "example.net"
    attempted.attempted.host = "mx1.example.net"
    attempted.attempted.address = "198.51.100.25"
    attempted.attempted.port = 25
    attempted.attempted.tls_version = "TLSv1.3"
    attempted.attempted.tls_cipher = "TLS_AES_256_GCM_SHA384"
    attempted.attempted.duration = 0.0123
    outcome = attempted.attempted.recipients.add(recipient="bob@example.net", outcome=1, smtp_code=250)
    outcome.status = "2.0.0"
    outcome.diagnostic = "250 2.0.0 Ok: queued as 3F1A2"
    outcome.remote_mta = "mx1.example.net"
    delivered = events_pb2.LifecycleEvent()
    delivered.CopyFrom(job)
    delivered.delivered.domain = "example.net"
    delivered.delivered.recipients.append(outcome)
    delivered.delivered.provider = "other"
    return [received, queued, routed, attempted, delivered]


class _Channel:
    """Stands in for the broker's publish channel: every publish is confirmed at once."""

    async def basic_publish(self, body: bytes, **_: object) -> None:
        """Take `body`."""


class _Broker:
    """Stands in for the Broker: connected, with its publish channel."""

    connected = True
    _channel = _Channel()

    async def publish_channel(self) -> _Channel:
        """The stand-in channel."""
        return self._channel


def _copies(rounds: int) -> list[events_pb2.LifecycleEvent]:
    """`rounds` fresh copies of the five events (emit stamps them), in order."""
    five = events()
    return [type(event).FromString(event.SerializeToString()) for _ in range(rounds // 5) for event in five]


def _cpu_us(run: Callable[[], None], count: int) -> float:
    """CPU microseconds per item of `run`, which handles `count` items."""
    start = time.process_time()
    run()
    return (time.process_time() - start) / count * 1e6


async def measure(rounds: int) -> dict[str, float]:
    """The figures, in CPU microseconds per event."""
    log = EventLog(cast(Broker, _Broker()), service="bench", buffer=10 * rounds, confirm_timeout=5, publish_timeout=5)
    figures: dict[str, float] = {}
    other = logging.getLogger("kubemta.bench")

    def log_lines(batch: list[events_pb2.LifecycleEvent]) -> Callable[[], None]:
        def run() -> None:
            for event in batch:
                _line(event)

        return run

    def log_records() -> None:
        for number in range(rounds):
            other.info("routed %s via %s: %s", "4F2A9C1B0D3E.1", "mx", "mx1.example.net", extra={"attempt": number})

    def emits(batch: list[events_pb2.LifecycleEvent]) -> Callable[[], None]:
        def run() -> None:
            for event in batch:
                log.emit(event)
            log._lines.write()  # the lines still kept for their window

        return run

    with message_context("4F2A9C1B0D3E"):
        figures["log line"] = _cpu_us(log_lines(_copies(rounds)), rounds)
        figures["log record"] = _cpu_us(log_records, rounds)
        figures["emit"] = _cpu_us(emits(_copies(rounds)), rounds)
        log._buffer.clear()
        log.start()
        one_by_one = _copies(rounds)
        start = time.process_time()
        for event in one_by_one:
            await log.record(event)
        figures["record"] = (time.process_time() - start) / rounds * 1e6
        together = _copies(rounds)
        start = time.process_time()
        for first in range(0, rounds, 100):
            await asyncio.gather(*(log.record(event) for event in together[first : first + 100]))
        figures["record x100"] = (time.process_time() - start) / rounds * 1e6
        await log.close(5)
    return figures


def main() -> int:
    """Print the figures (CPU µs per event) as a small table."""
    rounds = int(os.environ.get("BENCH_EVENT_ROUNDS", "20000"))
    target = os.environ.get("BENCH_EVENT_LOG", "/dev/null")
    with open(target, "w", encoding="utf-8", buffering=1) as sink:  # line-buffered, as stderr is
        real_stderr, sys.stderr = sys.stderr, sink
        try:
            setup_logging("bench")
            figures = asyncio.run(measure(rounds), loop_factory=uvloop.new_event_loop)  # the services' loop
        finally:
            sys.stderr = real_stderr
    print(f"CPU µs per event ({rounds} events, log to {target}, python {sys.version.split()[0]})")  # noqa: T201
    for name, value in figures.items():
        print(f"  {name:<12} {value:7.2f}")  # noqa: T201
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
