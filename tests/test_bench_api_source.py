"""Unit tests of the benchmark's HTTP API load (bench.api_source) and of its rows in the report (not timings).

The request body is checked with the ingress' own parser, the clients against a real HTTP
server on 127.0.0.1 that counts what arrives (keep-alive connections, bearer key, JSON),
answers 202 or, from a given request on, an error; the key file with the real
`kubemta-admin api-keys create`.
"""

import http.server
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench.api_source import (
    ApiEndpoint,
    ApiReplyError,
    ApiTally,
    ProbePacer,
    check_reply,
    request_body,
    run_api_source,
    text_body,
)
from bench.markdown import render
from bench.report import ratios, summarise, table
from bench.source import RECIPIENT, SENDER
from bench.systems import create_api_key
from bench.throughput import RunResult, failed_run
from kubemta_ingress.api_keys import parse_api_keys
from kubemta_ingress.api_message_model import parse_request
from tests.harness.bench_documents import result_document
from tests.harness.ports import free_port

ADDRESS = "127.0.0.1"
KEY = "kmta_0123456789ab_" + "s" * 43


# --- the message ---------------------------------------------------------------------------------------------------


@given(st.integers(min_value=0, max_value=20_000))
def test_text_body_has_the_size_in_short_lines(size: int) -> None:
    text = text_body(size)
    assert abs(len(text) - size) <= 1  # a 1-byte remainder cannot hold a character and its newline
    lines = text.split("\n")
    assert all(len(line) <= 76 and not line.startswith(".") for line in lines)


@pytest.mark.parametrize("size", [1024, 10240])
def test_request_body_is_a_message_the_api_accepts(size: int) -> None:
    body = request_body(recipient=RECIPIENT, subject="kubemta bench", text=text_body(size))
    request = parse_request(body, max_recipients=100)  # the ingress' own parser: no 422 for the bench's body
    assert request.from_.address == SENDER and [mailbox.address for mailbox in request.to] == [RECIPIENT]
    document = json.loads(body)
    assert document["from"] == {"address": SENDER}
    assert document["to"] == [{"address": RECIPIENT}]
    assert len(document["text"]) == size


# --- the answers ---------------------------------------------------------------------------------------------------


def test_a_202_for_one_recipient_gives_its_queue_id() -> None:
    body = json.dumps({"queue_id": "Q1", "message_id": "<m@x>", "recipients": 1}).encode()
    assert check_reply(202, body) == "Q1"


@pytest.mark.parametrize(
    ("status", "body", "shown"),
    [
        (503, b'{"detail": "the broker is unavailable"}', 'HTTP 503: {"detail": "the broker is unavailable"}'),
        (401, b"", "HTTP 401: "),
        (202, b"queued", "not JSON"),
        (202, b"[1, 2]", "not an object"),
        (202, json.dumps({"queue_id": "Q", "message_id": "<m@x>", "recipients": 2}).encode(), "1 recipient"),
        (202, json.dumps({"queue_id": "", "message_id": "<m@x>", "recipients": 1}).encode(), "queue id"),
        (202, json.dumps({"message_id": "<m@x>", "recipients": 1}).encode(), "queue id"),
    ],
)
def test_anything_else_is_an_error_naming_status_and_answer(status: int, body: bytes, shown: str) -> None:
    with pytest.raises(ApiReplyError) as raised:
        check_reply(status, body)
    assert raised.value.status == status
    assert shown in str(raised.value)


@given(st.integers(min_value=100, max_value=599), st.binary(max_size=2000))
def test_hostile_answers_are_errors_or_queue_ids_shown_short_and_printable(status: int, body: bytes) -> None:
    try:
        queue_id = check_reply(status, body)
    except ApiReplyError as exc:
        text = str(exc)
        assert text.isprintable()
        assert len(text) <= 400
    else:
        assert status == 202 and queue_id


# --- the tally and the probe pace ----------------------------------------------------------------------------------


def test_the_tally_hands_out_each_message_once_and_stops_at_the_first_error() -> None:
    tally = ApiTally(requested=3)
    assert [tally.take(), tally.take()] == [1, 2]
    tally.accept(0.01)
    tally.accept(0.02, probe_id="run-1", accepted_at=1000.0)
    tally.fail("HTTP 503: busy", 503)
    tally.fail("HTTP 500: later", 500)
    assert tally.take() is None  # message 3 is never sent after a failure
    assert (tally.accepted, tally.errors, tally.first_error) == (1, 2, "HTTP 503: busy")
    assert [sample.probe_id for sample in tally.probes] == ["run-1"] and tally.probes[0].accepted_at == 1000.0
    assert tally.latencies == [0.01, 0.02]
    assert tally.summary() == (
        "1 of 3 load messages answered 202; answers: 2 x 202, 1 x 500, 1 x 503; 2 error(s), the first: HTTP 503: busy"
    )


def test_the_tally_ends_when_every_message_is_handed_out() -> None:
    tally = ApiTally(requested=2)
    assert [tally.take(), tally.take(), tally.take()] == [1, 2, None]
    assert tally.summary() == "0 of 2 load messages answered 202; answers: none"


def test_probes_are_due_at_the_rate_and_never_without_one() -> None:
    assert ProbePacer(0.0, "r", start=100.0).due(1e9) is None
    pacer = ProbePacer(10.0, "r", start=100.0)
    assert pacer.due(100.0) == "r-1"
    assert pacer.due(100.05) is None
    assert pacer.due(100.1) == "r-2"
    assert pacer.due(200.0) == "r-3"  # after a stall: one probe, no burst to catch up
    assert pacer.due(200.0) is None


# --- against a real HTTP server ------------------------------------------------------------------------------------


@dataclass
class Seen:
    """What the server received; `fail_from`: the request number (1-based) from which it answers 503."""

    fail_from: int | None = None
    requests: list[dict[str, Any]] = field(default_factory=list)
    connections: set[int] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _handler(seen: Seen) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive

        def do_POST(self) -> None:  # noqa: N802 - http.server's hook name
            body = self.rfile.read(int(self.headers["Content-Length"]))
            with seen.lock:
                seen.requests.append(
                    {
                        "path": self.path,
                        "authorization": self.headers.get("Authorization"),
                        "content_type": self.headers.get("Content-Type"),
                        "json": json.loads(body),
                    }
                )
                seen.connections.add(self.client_address[1])
                number = len(seen.requests)
            answer: dict[str, object]
            if seen.fail_from is not None and number >= seen.fail_from:
                status, answer = 503, {"detail": "the broker is unavailable"}
            else:
                status, answer = 202, {"queue_id": f"Q{number}", "message_id": f"<{number}@x>", "recipients": 1}
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - http.server's signature
            pass

    return Handler


@pytest.fixture
def api_server() -> Iterator[tuple[str, Seen]]:
    seen = Seen()
    server = http.server.ThreadingHTTPServer((ADDRESS, free_port(ADDRESS)), _handler(seen))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{ADDRESS}:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


async def test_the_clients_send_every_message_with_the_key_over_keep_alive_connections(
    api_server: tuple[str, Seen],
) -> None:
    url, seen = api_server
    result = await run_api_source(ApiEndpoint((url,), KEY), count=40, size=1024, sessions=4)
    assert (result.source.requested, result.source.accepted, result.source.returncode) == (40, 40, 0)
    assert result.source.tool == "API source"
    assert len(seen.requests) == 40 and len(result.latencies) == 40
    assert len(seen.connections) <= 4  # one connection per client, kept alive
    assert {request["path"] for request in seen.requests} == {"/v1/messages"}
    assert {request["authorization"] for request in seen.requests} == {f"Bearer {KEY}"}
    assert {request["content_type"] for request in seen.requests} == {"application/json"}
    first = seen.requests[0]["json"]
    assert isinstance(first, dict) and first["to"] == [{"address": RECIPIENT}] and len(first["text"]) == 1024
    assert result.probes.samples == []
    assert result.source.output_tail == "40 of 40 load messages answered 202; answers: 40 x 202"


async def test_probe_messages_go_beside_the_load_to_probe_recipients(api_server: tuple[str, Seen]) -> None:
    url, seen = api_server
    result = await run_api_source(
        ApiEndpoint((url,), KEY), count=30, size=100, sessions=2, probe_rate=10_000.0, run_id="abc"
    )
    probes = [r["json"] for r in seen.requests if r["json"]["to"][0]["address"].startswith("probe-")]
    assert result.source.accepted == 30 and len(seen.requests) == 30 + len(probes)
    assert probes and len(result.probes.samples) == len(probes)
    assert {sample.probe_id.split("-")[0] for sample in result.probes.samples} == {"abc"}
    assert all(probe["to"][0]["address"].endswith("@bench.test") for probe in probes)
    assert len(result.latencies) == len(seen.requests)


async def test_the_first_error_stops_every_client_and_fails_the_run(api_server: tuple[str, Seen]) -> None:
    url, seen = api_server
    seen.fail_from = 5
    result = await run_api_source(ApiEndpoint((url,), KEY), count=1000, size=100, sessions=3)
    assert result.source.returncode == 1
    assert result.source.accepted == 4  # requests 1-4 were answered 202
    assert len(seen.requests) <= 4 + 3  # each client stops after at most one more answer
    assert 'the first: HTTP 503: {"detail": "the broker is unavailable"}' in result.source.output_tail


async def test_a_server_that_is_not_there_is_a_failed_run() -> None:
    url = f"http://{ADDRESS}:{free_port(ADDRESS)}"
    result = await run_api_source(ApiEndpoint((url,), KEY), count=10, size=100, sessions=2)
    assert (result.source.accepted, result.source.returncode) == (0, 1)
    assert "ConnectError" in result.source.output_tail


async def test_clients_are_spread_over_every_ingress_url(api_server: tuple[str, Seen]) -> None:
    url, seen = api_server
    other = url.replace(ADDRESS, "127.0.0.2")  # no server there: the clients given it fail
    result = await run_api_source(ApiEndpoint((url, other), KEY), count=50, size=100, sessions=2)
    assert result.source.returncode == 1 and "ConnectError" in result.source.output_tail


async def test_an_endpoint_without_urls_is_refused() -> None:
    with pytest.raises(ValueError, match="URL"):
        await run_api_source(ApiEndpoint((), KEY), count=1, size=1, sessions=1)


# --- the key file ---------------------------------------------------------------------------------------------------


def test_the_run_key_is_made_by_kubemta_admin_for_the_sender_domain(tmp_path: Path) -> None:
    path = tmp_path / "api-keys"
    key = create_api_key(path, "client.bench.test")
    assert key.startswith("kmta_") and len(key) == 61
    [entry] = parse_api_keys(path.read_text()).by_name.values()
    assert entry.name == "bench" and [str(identity) for identity in entry.identities] == ["client.bench.test"]
    with pytest.raises(RuntimeError, match="exists"):  # a second key of the same name in the same file
        create_api_key(path, "client.bench.test")


# --- the report -----------------------------------------------------------------------------------------------------


def _run(
    system: str,
    size: int,
    accepted: float,
    delivered: float,
    source_cpu: float | None = None,
    cpu: dict[str, float] | None = None,
) -> RunResult:
    run = failed_run(system, size, 1, "")
    run.error = None
    run.accepted_rate, run.delivered_rate = accepted, delivered
    run.accept_p50_ms, run.accept_p99_ms = 10.0, 20.0
    run.accept_ms = [10.0, 20.0]
    run.cpu_per_1000 = cpu or {"ingress": 3.0, "services total": 6.0, "rabbitmq": 2.0, "total": 8.0}
    run.source_cpu_per_1000 = source_cpu
    return run


def _document() -> dict[str, Any]:
    api = _run("kubemta-api", 1024, 200.0, 175.0, source_cpu=1.5)
    api.e2e_p50_ms = -60.86  # the 202 reached the client after the message reached the sink
    runs = [
        _run("kubemta", 1024, 400.0, 350.0),
        api,
        _run("postfix", 1024, 1000.0, 875.0, cpu={"postfix": 2.0}),
        failed_run("kubemta-api", 10240, 1, "API source exited 1 after 3 of 10: HTTP 503"),
    ]
    summary = summarise(runs)
    return result_document(
        summary,
        sizes=[1024, 10240],
        systems=["kubemta", "kubemta-api", "postfix"],
        ratio_kubemta_to_postfix=ratios(summary, [1024, 10240]),
        ratio_api_to_smtp=ratios(summary, [1024, 10240], "kubemta-api", "kubemta"),
    )


def test_the_api_gets_its_ratio_to_smtp_and_its_source_cpu_apart() -> None:
    runs = [_run("kubemta", 1024, 400.0, 350.0), _run("kubemta-api", 1024, 200.0, 175.0, source_cpu=1.5)]
    summary = summarise(runs)
    assert ratios(summary, [1024], "kubemta-api", "kubemta") == {"1024": {"accepted_rate": 0.5, "delivered_rate": 0.5}}
    assert summary["1024/kubemta-api"]["source_cpu_per_1000"].median == 1.5
    assert summary["1024/kubemta"]["source_cpu_per_1000"] is None
    text = table(
        summary,
        {},
        [],
        sizes=[1024],
        systems=["kubemta", "kubemta-api"],
        title="t",
        api_ratio=ratios(summary, [1024], "kubemta-api", "kubemta"),
    )
    assert "kubemta-api / kubemta (HTTP API / SMTP) at 1 KiB: accepted 0.50x, delivered 0.50x" in text
    assert "(API source, not in total: 1.50)" in text


def test_the_markdown_has_the_api_rows_beside_smtp_and_postfix() -> None:
    text = render(_document())
    assert "(kubemta-api: 20 HTTP API clients, keep-alive)" in text
    assert "| 1 KiB | kubemta-api | 200 | 175 | 10.0 | 20.0 | -60.9 | – |" in text
    assert "| 10 KiB | kubemta-api (1 of 1 runs failed) |" in text
    assert "kubemta HTTP API / kubemta SMTP (medians): 1 KiB: accepted 0.50×, delivered 0.50×." in text
    assert "kubemta / Postfix (medians): 1 KiB: accepted 0.40×, delivered 0.40×." in text
    assert "| 1 KiB | kubemta | 3.00 | – | – | – | 6.00 | 2.00 | 8.00 |" in text
    assert "| 1 KiB | kubemta-api | 3.00 | – | – | – | 6.00 | 2.00 | 8.00 |" in text
    assert "| 1 KiB | postfix (all daemons) | – | – | – | – | – | – | 2.00 |" in text
    assert "1 KiB 1.50 CPU s per 1,000 messages" in text
