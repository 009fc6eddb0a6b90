"""The HTTP sending API's load source: N keep-alive clients POSTing JSON messages to `POST /v1/messages`.

The API's counterpart of `smtp-source` (bench.source): `sessions` clients, each an
`httpx.AsyncClient` holding one HTTP/1.1 keep-alive connection, take message numbers from
a shared counter until `count` load messages are answered, so the API gets the same
concurrency as SMTP. Each message is a JSON `MessageRequest` from bench@client.bench.test
to rcpt@bench.test whose `text` is `size` bytes of 76-character lines (as smtp-source's
`-l` payload); kubemta composes the headers.

Every request is timed from the call that writes it to the complete response read: the
API's accept latency, as SMTP's end of DATA -> 250 (a 202 comes only after the broker's
confirm). Beside the load, `probe_rate` probe messages per second in all go to
`probe-<run>-<n>@bench.test` (the latency probe's recipients, found in the sink's dumps), and
the wall-clock time of their 202 is kept for the end-to-end latency.

Any answer but 202 (or a 202 whose body is not `{"queue_id", "message_id", "recipients": 1}`)
and any transport error stops every client, as smtp-source stops at its first negative
reply: the run is reported as failed, with the first error.
"""

import asyncio
import json
import resource
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx

from bench.latency_probe import ProbeReport, ProbeSample
from bench.source import RECIPIENT, SENDER, SourceResult

PATH = "/v1/messages"
REQUEST_TIMEOUT = 120.0  # seconds; as the SMTP probe's: an answer that slow is an error, never a hang
LINE = "X" * 76 + "\n"
TOOL = "API source"
SHOWN_ERROR = 300  # characters of a server's answer kept in an error


class ApiReplyError(Exception):
    """An answer other than the 202 of one queued message; `status` is its HTTP status."""

    def __init__(self, text: str, status: int) -> None:
        super().__init__(text)
        self.status = status


@dataclass(frozen=True)
class ApiEndpoint:
    """Where the API listens (one base URL per ingress process) and the bearer key to send with."""

    urls: tuple[str, ...]
    key: str


def text_body(size: int) -> str:
    """`size` characters of 76-character lines (the last one shorter), none starting with a dot."""
    body = LINE * (size // len(LINE))
    rest = size - len(body)
    if rest > 1:
        body += "Y" * (rest - 1) + "\n"
    return body


def request_body(*, recipient: str, subject: str, text: str) -> bytes:
    """The JSON MessageRequest of one message from SENDER to `recipient`."""
    document = {"from": {"address": SENDER}, "to": [{"address": recipient}], "subject": subject, "text": text}
    return json.dumps(document).encode()


def _printable(text: str) -> str:
    shown = "".join(ch if ch.isprintable() else "?" for ch in text[:SHOWN_ERROR])
    return shown + ("..." if len(text) > SHOWN_ERROR else "")


def check_reply(status: int, body: bytes) -> str:
    """The queue id of a 202 for one recipient; ApiReplyError naming the status and the answer otherwise."""
    text = body.decode("utf-8", errors="replace")
    if status != 202:
        raise ApiReplyError(f"HTTP {status}: {_printable(text)}", status)
    try:
        answer = json.loads(text)
    except ValueError:
        raise ApiReplyError(f"HTTP 202 with a body that is not JSON: {_printable(text)}", status) from None
    if not isinstance(answer, dict):
        raise ApiReplyError(f"HTTP 202 with a body that is not an object: {_printable(text)}", status)
    queue_id, message_id, recipients = answer.get("queue_id"), answer.get("message_id"), answer.get("recipients")
    if not isinstance(queue_id, str) or not queue_id or not isinstance(message_id, str) or recipients != 1:
        raise ApiReplyError(f"HTTP 202 without a queue id, a message id and 1 recipient: {_printable(text)}", status)
    return queue_id


@dataclass
class ApiTally:
    """What the clients did so far; shared by them in one event loop, so without locks."""

    requested: int
    issued: int = 0  # load message numbers handed out
    accepted: int = 0  # load messages answered 202
    probes_sent: int = 0
    latencies: list[float] = field(default_factory=list)  # seconds, every 202 (load and probe)
    probes: list[ProbeSample] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    errors: int = 0
    first_error: str | None = None

    def take(self) -> int | None:
        """The next load message's number; None when all are handed out or a client failed."""
        if self.first_error is not None or self.issued >= self.requested:
            return None
        self.issued += 1
        return self.issued

    def accept(self, seconds: float, *, probe_id: str | None = None, accepted_at: float = 0.0) -> None:
        """A 202 after `seconds`; a probe's keeps its wall-clock time for the end-to-end latency."""
        self.statuses[202] += 1
        self.latencies.append(seconds)
        if probe_id is None:
            self.accepted += 1
        else:
            self.probes.append(ProbeSample(probe_id, seconds, accepted_at))

    def fail(self, error: str, status: int | None = None) -> None:
        """Anything but a good 202: counted; the first one stops every client."""
        if status is not None:
            self.statuses[status] += 1
        self.errors += 1
        if self.first_error is None:
            self.first_error = error

    def summary(self) -> str:
        """The answers by status, and the first error (the `output_tail` of a failed run)."""
        counted = ", ".join(f"{count} x {status}" for status, count in sorted(self.statuses.items()))
        text = f"{self.accepted} of {self.requested} load messages answered 202; answers: {counted or 'none'}"
        if self.first_error is not None:
            text += f"; {self.errors} error(s), the first: {self.first_error}"
        return text


@dataclass(frozen=True)
class ApiSourceResult:
    """One API source run: as smtp-source's result, plus every request's latency and the probe samples."""

    source: SourceResult
    latencies: list[float]
    probes: ProbeReport
    cpu_seconds: float  # this process' user+system CPU during the run: the load generator's own cost


class ProbePacer:
    """Says when the next probe message is due: `rate` per second in all (at most one before each load message of
    a client, so probes never crowd the load out), none when `rate` is 0."""

    def __init__(self, rate: float, run_id: str, start: float) -> None:
        self.interval = 1 / rate if rate > 0 else None
        self.run_id = run_id
        self.next_at = start
        self.sequence = 0

    def due(self, now: float) -> str | None:
        """A probe id when a probe is due at `now` (monotonic seconds), else None."""
        if self.interval is None or now < self.next_at:
            return None
        self.sequence += 1
        self.next_at += self.interval
        if self.next_at <= now:  # behind (a stall): one probe now, the next an interval later, no burst
            self.next_at = now + self.interval
        return f"{self.run_id}-{self.sequence}"


async def _post(client: httpx.AsyncClient, url: str, key: str, body: bytes) -> tuple[float, str]:
    """POST one message: the seconds to its complete 202 and the queue id; ApiReplyError or httpx.HTTPError."""
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    start = time.perf_counter()
    response = await client.post(url + PATH, content=body, headers=headers)
    seconds = time.perf_counter() - start
    return seconds, check_reply(response.status_code, response.content)


async def _send(
    client: httpx.AsyncClient, url: str, key: str, body: bytes, tally: ApiTally, probe_id: str | None
) -> bool:
    """POST one message and tally the answer; False when it failed (the client then stops)."""
    try:
        seconds, _ = await _post(client, url, key, body)
    except ApiReplyError as exc:
        tally.fail(str(exc), exc.status)
        return False
    except httpx.HTTPError as exc:
        tally.fail(f"{type(exc).__name__}: {_printable(str(exc))}")
        return False
    tally.accept(seconds, probe_id=probe_id, accepted_at=time.time())
    return True


async def _client(url: str, key: str, tally: ApiTally, pacer: ProbePacer, text: str, subject: str) -> None:
    """One client: load messages until none are left, each preceded by a probe message when one is due."""
    load_body = request_body(recipient=RECIPIENT, subject=subject, text=text)
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    async with httpx.AsyncClient(http1=True, http2=False, limits=limits, timeout=REQUEST_TIMEOUT) as client:
        while tally.take() is not None:
            probe_id = pacer.due(time.monotonic())
            if probe_id is not None:
                tally.probes_sent += 1
                probe = request_body(recipient=f"probe-{probe_id}@bench.test", subject=f"{subject} probe", text=text)
                if not await _send(client, url, key, probe, tally, probe_id):
                    return
            if not await _send(client, url, key, load_body, tally, None):
                return


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def run_api_source(
    endpoint: ApiEndpoint,
    *,
    count: int,
    size: int,
    sessions: int,
    probe_rate: float = 0.0,
    run_id: str = "api",
) -> ApiSourceResult:
    """Send `count` load messages (plus probes) through `sessions` clients; returns when all are answered or one
    failed. Client i talks to `endpoint.urls[i % len(urls)]`."""
    if not endpoint.urls:
        raise ValueError("an ApiEndpoint needs at least one URL")
    tally = ApiTally(requested=count)
    text = text_body(size)
    started_at = time.time()
    start = time.monotonic()
    cpu_before = _cpu_seconds()
    pacer = ProbePacer(probe_rate, run_id, start)
    urls = endpoint.urls
    async with asyncio.TaskGroup() as group:
        for index in range(sessions):
            group.create_task(_client(urls[index % len(urls)], endpoint.key, tally, pacer, text, "kubemta bench"))
    wall = time.monotonic() - start
    cpu = _cpu_seconds() - cpu_before
    failed = tally.first_error is not None or tally.accepted != count
    source = SourceResult(count, tally.accepted, wall, started_at, 1 if failed else 0, tally.summary(), tool=TOOL)
    return ApiSourceResult(source, tally.latencies, ProbeReport(samples=tally.probes), cpu)
