"""Fixtures of the admin tests. `tracker`: a loopback stand-in for the tracker's HTTP API that answers what a test
set for (method, path) and records every request; http.server in a thread on a free port, so the CLI under test
talks real HTTP to it (the end-to-end run against the real tracker is in tests/e2e)."""

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.harness.ports import free_port


@dataclass
class Answer:
    status: int = 200
    body: bytes = b"{}"
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "application/json"})
    delay: float = 0.0
    chunks: int = 0  # > 0: send the body this many times, chunked, without a Content-Length


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def json(self) -> object:
        return json.loads(self.body)


class StandIn:
    def __init__(self) -> None:
        self.answers: dict[tuple[str, str], Answer] = {}
        self.requests: list[Request] = []
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    def answer(self, method: str, path: str, payload: object = None, *, status: int = 200, **kwargs: object) -> None:
        body = payload if isinstance(payload, bytes) else json.dumps(payload if payload is not None else {}).encode()
        self.answers[(method, path)] = Answer(status=status, body=body, **kwargs)  # type: ignore[arg-type]

    def last(self) -> Request:
        assert self.requests, "the CLI sent no request"
        return self.requests[-1]


def _handler(standin: StandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class' name
            pass

        def handle(self) -> None:
            try:
                super().handle()
            except ConnectionError:
                pass  # the CLI hung up (a timeout, an answer too large): expected in those tests

        def _serve(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            standin.requests.append(
                Request(self.command, parts.path, parse_qs(parts.query), dict(self.headers.items()), body)
            )
            answer = standin.answers.get((self.command, parts.path), Answer(404, b'{"detail": "no such route"}'))
            if answer.delay:
                time.sleep(answer.delay)
            self.send_response(answer.status)
            for name, value in answer.headers.items():
                self.send_header(name, value)
            if answer.chunks:
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                try:
                    for _ in range(answer.chunks):
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(answer.body), answer.body))
                    self.wfile.write(b"0\r\n\r\n")
                except OSError:
                    pass  # the client stopped reading: that is what the test wants
                self.close_connection = True
                return
            self.send_header("Content-Length", str(len(answer.body)))
            self.end_headers()
            try:
                self.wfile.write(answer.body)
            except OSError:
                pass

        do_GET = do_POST = _serve  # noqa: N815 - http.server's names

    return Handler


@pytest.fixture
def tracker() -> Iterator[StandIn]:
    standin = StandIn()
    server = ThreadingHTTPServer(("127.0.0.1", standin.port), _handler(standin))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield standin
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
