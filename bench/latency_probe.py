"""An own small asyncio SMTP client that samples accept latency while smtp-source loads the system.

smtp-source cannot report per-message timings, so a few probe sessions run in parallel
with it, each sending one message per connection at a fixed pace (`rate` messages per
second in all). For each message the probe writes the content, waits until it is in the
socket, then writes the terminating "." line: the accept latency is the time from that
write to the complete final reply (RFC 5321 §4.1.1.4: the reply to the end of mail data),
i.e. what a client waits for the 250 (kubemta: after the broker's publisher confirm).
The wall-clock time of the 250 is kept as the message's accept time for the end-to-end
latency (arrival at the sink minus accept time). Probe messages have the workload's size
and go to `probe-<run>-<n>@bench.test`, so they share the destination of the load.
"""

import asyncio
import email.utils
import time
from dataclasses import dataclass, field

REPLY_TIMEOUT = 120.0  # seconds; RFC 5321 §4.5.3.2 allows the server far more, a probe must not hang a run
LINE = b"X" * 76 + b"\r\n"


@dataclass(frozen=True)
class ProbeSample:
    """One probe message that got its 250."""

    probe_id: str
    accept_seconds: float
    accepted_at: float  # epoch seconds of the 250


@dataclass
class ProbeReport:
    samples: list[ProbeSample] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


class SmtpReplyError(Exception):
    pass


def message(probe_id: str, recipient: str, size: int) -> bytes:
    """A message of about `size` payload bytes (like smtp-source -l), CRLF lines, none starting with '.'."""
    header = (
        f"From: <probe@client.bench.test>\r\nTo: <{recipient}>\r\nSubject: kubemta bench probe {probe_id}\r\n"
        f"Date: {email.utils.formatdate()}\r\nMessage-ID: <{probe_id}@client.bench.test>\r\n\r\n"
    ).encode()
    body = LINE * (size // len(LINE))
    rest = size - len(body)
    if rest > 2:
        body += b"Y" * (rest - 2) + b"\r\n"
    return header + body


async def read_reply(reader: asyncio.StreamReader) -> tuple[int, str]:
    """One (possibly multi-line) SMTP reply: its code and last line."""
    async with asyncio.timeout(REPLY_TIMEOUT):
        while True:
            line = await reader.readline()
            if not line:
                raise SmtpReplyError("connection closed")
            if len(line) < 4 or line[3:4] != b"-":
                text = line.decode(errors="replace").strip()
                return int(line[:3]), text


async def expect_reply(reader: asyncio.StreamReader, code: int, step: str) -> None:
    got, text = await read_reply(reader)
    if got != code:
        raise SmtpReplyError(f"{step}: {text}")


class LatencyProbe:
    """Probe sessions against host:port until stopped; results in `report`."""

    def __init__(self, host: str, port: int, *, run_id: str, size: int, sessions: int, rate: float) -> None:
        self.host = host
        self.port = port
        self.run_id = run_id
        self.size = size
        self.sessions = sessions
        self.interval = sessions / rate  # seconds between message starts, per session
        self.report = ProbeReport()
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._sequence = 0

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._session_loop(index)) for index in range(self.sessions)]

    async def stop(self) -> None:
        """Let each session finish the message it is sending, then end."""
        self._stopping.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _session_loop(self, index: int) -> None:
        # Spread the sessions' starts over one interval so they do not send in lock step.
        await self._sleep(self.interval * index / max(1, self.sessions))
        while not self._stopping.is_set():
            began = time.monotonic()
            self._sequence += 1
            probe_id = f"{self.run_id}-{self._sequence}"
            try:
                self.report.samples.append(await self._send(probe_id))
            except (OSError, SmtpReplyError, TimeoutError, ValueError) as exc:
                self.report.errors.append(f"{probe_id}: {exc!r}")
            await self._sleep(self.interval - (time.monotonic() - began))

    async def _sleep(self, seconds: float) -> None:
        if seconds > 0:
            try:
                await asyncio.wait_for(self._stopping.wait(), seconds)
            except TimeoutError:
                pass

    async def _send(self, probe_id: str) -> ProbeSample:
        recipient = f"probe-{probe_id}@bench.test"
        content = message(probe_id, recipient, self.size)
        async with asyncio.timeout(REPLY_TIMEOUT):
            reader, writer = await asyncio.open_connection(self.host, self.port)
        try:
            await expect_reply(reader, 220, "greeting")
            writer.write(b"EHLO probe.client.bench.test\r\n")
            await expect_reply(reader, 250, "EHLO")
            writer.write(b"MAIL FROM:<probe@client.bench.test>\r\n")
            await expect_reply(reader, 250, "MAIL")
            writer.write(f"RCPT TO:<{recipient}>\r\n".encode())
            await expect_reply(reader, 250, "RCPT")
            writer.write(b"DATA\r\n")
            await expect_reply(reader, 354, "DATA")
            writer.write(content)
            await writer.drain()
            start = time.perf_counter()
            writer.write(b".\r\n")
            code, text = await read_reply(reader)
            accept_seconds = time.perf_counter() - start
            accepted_at = time.time()
            if code != 250:
                raise SmtpReplyError(f"end of data: {text}")
            try:  # the message is queued by now: a failing QUIT does not lose the sample
                writer.write(b"QUIT\r\n")
                await read_reply(reader)
            except (OSError, SmtpReplyError, TimeoutError, ValueError):
                pass
            return ProbeSample(probe_id, accept_seconds, accepted_at)
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except OSError:
                pass
