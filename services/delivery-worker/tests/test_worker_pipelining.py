"""RFC 2920 PIPELINING in the SMTP client: MAIL FROM, every RCPT TO and DATA in one write,
the replies read in order and mapped exactly as without pipelining; the sequential path
for servers that do not offer it, or when KUBEMTA_SMTP_PIPELINING is off.

`RawPeer` is a bare asyncio SMTP server that records every read it gets, so a test can
see what arrived together; the aiosmtpd `ScriptedPeer` (offering PIPELINING) checks
the outcomes against a real server."""

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiosmtplib.protocol import SMTPProtocol

from kubemta.v1 import message_pb2
from kubemta_delivery_worker.connection import host_label
from kubemta_delivery_worker.deliverer import Deliverer, smtp_options
from kubemta_delivery_worker.pool import ConnectionPool
from kubemta_delivery_worker.settings import WorkerSettings
from kubemta_delivery_worker.transaction import (
    HostAttempt,
    SmtpConnection,
    SmtpOptions,
    attempt_host,
)

DELIVERED = message_pb2.OUTCOME_DELIVERED
PERMANENT = message_pb2.OUTCOME_PERMANENT
TEMPORARY = message_pb2.OUTCOME_TEMPORARY


class RawPeer(asyncio.Protocol):
    """One-connection-at-a-time SMTP server: `reads` holds every chunk received, `lines` every command line.

    `rcpt` gives RCPT replies by local part (default 250), `data` the reply to DATA and
    `end` the one to the final dot. `hold` keeps the replies from MAIL on back until the DATA line
    arrived (a client waiting for the MAIL reply first then times out); `group_replies`
    answers only that many commands of the group, then closes the connection (None:
    all), `stall` never answers the group, `late` sends the replies after the MAIL one that
    many seconds later. `connections` counts the connections (one at a time).
    """

    def __init__(
        self,
        *,
        extensions: tuple[str, ...] = ("PIPELINING", "8BITMIME"),
        rcpt: dict[str, str] | None = None,
        data: str = "354 End data with <CR><LF>.<CR><LF>",
        end: str = "250 2.0.0 Ok: queued",
        hold: bool = False,
        group_replies: int | None = None,
        stall: bool = False,
        mail: str = "250 2.1.0 Ok",
        late: float = 0.0,
    ) -> None:
        self.extensions = extensions
        self.rcpt = rcpt or {}
        self.data, self.end = data, end
        self.hold, self.group_replies, self.stall = hold, group_replies, stall
        self.mail, self.late = mail, late
        self.connections = 0
        self.reads: list[bytes] = []
        self.lines: list[bytes] = []
        self.content: list[bytes] = []
        self._buffer = b""
        self._in_data = False
        self._held: list[str] = []
        self._holding = False
        self._late: list[str] | None = None
        self._transport: asyncio.Transport | None = None

    def __call__(self) -> "RawPeer":
        return self

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self.connections += 1
        transport.write(b"220 raw.test ESMTP\r\n")

    def data_received(self, data: bytes) -> None:
        self.reads.append(data)
        self._buffer += data
        while b"\r\n" in self._buffer:
            line, _, self._buffer = self._buffer.partition(b"\r\n")
            self._line(line)
        self._flush()

    def _line(self, line: bytes) -> None:
        if self._in_data:
            if line == b".":
                self._in_data = False
                self._held.append(self.end)
                self.lines.append(line)
            else:
                self.content.append(line)
            return
        self.lines.append(line)
        verb = line[:4].upper()
        if verb == b"EHLO":
            keywords = ["raw.test", *self.extensions]
            self._held.append("\r\n".join(f"250-{k}" for k in keywords[:-1]) + f"\r\n250 {keywords[-1]}")
        elif verb == b"MAIL":
            self._holding = self.hold
            self._held.append(self.mail)
        elif verb == b"RCPT":
            local = line.decode().partition("<")[2].partition("@")[0]
            self._held.append(self.rcpt.get(local, "250 2.1.5 Ok"))
        elif verb == b"DATA":
            self._in_data = self.data.startswith("354")
            self._held.append(self.data)
            self._group_end()
        elif verb == b"QUIT":
            self._held.append("221 2.0.0 Bye")
        else:
            self._held.append("250 2.0.0 Ok")

    def _group_end(self) -> None:
        if self.stall:
            self._held.clear()
            self._in_data = False
        elif self.group_replies is not None and self._transport is not None:
            self._held = self._held[: self.group_replies]
            self._flush()
            self._transport.abort()
        elif self.late and self._transport is not None:
            self._transport.write(f"{self._held[0]}\r\n".encode())
            self._held, self._late = [], self._held[1:]
            asyncio.get_running_loop().call_later(self.late, self._send_late)
        self._holding = False

    def _send_late(self) -> None:
        late, self._late = self._late or [], None
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write("".join(f"{reply}\r\n" for reply in late).encode())

    def _flush(self) -> None:
        if self._late is not None:  # replies stay in order: behind the late ones
            self._late += self._held
            self._held.clear()
        if self._held and not self._holding and self._transport is not None and not self._transport.is_closing():
            self._transport.write("".join(f"{reply}\r\n" for reply in self._held).encode())
            self._held.clear()

    def read_with(self, prefix: bytes) -> bytes:
        """The first read holding a line that starts with `prefix`."""
        return next(chunk for chunk in self.reads if chunk.startswith(prefix) or b"\n" + prefix in chunk)


@pytest.fixture
async def raw_peer(
    loopback: Callable[[], str],
) -> AsyncIterator[Callable[..., Awaitable[tuple[message_pb2.RouteHost, RawPeer]]]]:
    """`host, peer = await raw_peer(**RawPeer options)`: a listening RawPeer and the route host pointing at it."""
    servers: list[asyncio.Server] = []

    async def start(**kwargs: Any) -> tuple[message_pb2.RouteHost, RawPeer]:
        peer = RawPeer(**kwargs)
        address = loopback()
        server = await asyncio.get_running_loop().create_server(peer, address, 0)
        servers.append(server)
        port = server.sockets[0].getsockname()[1]
        return message_pb2.RouteHost(hostname="mx.raw.test", address=address, port=port), peer

    yield start
    for server in servers:
        server.close()


def sequential(options: SmtpOptions) -> SmtpOptions:
    return dataclasses.replace(options, pipelining=False)


async def test_mail_rcpts_and_data_arrive_in_one_read_before_any_reply(raw_peer, job, options, monkeypatch):
    host, peer = await raw_peer(hold=True)
    writes: list[bytes] = []
    write = SMTPProtocol.write

    def spy(protocol: SMTPProtocol, data: bytes) -> None:
        writes.append(data)
        write(protocol, data)

    monkeypatch.setattr(SMTPProtocol, "write", spy)

    attempt = await attempt_host(host, job([host]), ["a@dest.test", "b@dest.test"], options)

    assert [r.outcome for r in attempt.results.values()] == [DELIVERED, DELIVERED]
    assert attempt.failure is None
    group = b"MAIL FROM:<alice@sender.test>\r\nRCPT TO:<a@dest.test>\r\nRCPT TO:<b@dest.test>\r\nDATA\r\n"
    assert group in writes, "one write"
    assert peer.read_with(b"MAIL FROM") == group, "one read at the server, and nothing waited for a reply"
    assert b"\r\n".join(peer.content) + b"\r\n" == job([host]).content


async def test_pipelined_command_lines_are_byte_identical_to_the_sequential_ones(raw_peer, job, options):
    extensions = ("PIPELINING", "SIZE 100000", "8BITMIME", "SMTPUTF8")
    recipients = ["a@dest.test", "bé@dest.test"]
    content = b"Subject: caf\xc3\xa9\r\n\r\nh\xc3\xa9\r\n"
    lines = []
    for smtp in (options, sequential(options)):
        host, peer = await raw_peer(extensions=extensions)
        attempt = await attempt_host(host, job([host], content=content), recipients, smtp)
        assert [r.outcome for r in attempt.results.values()] == [DELIVERED, DELIVERED]
        lines.append(peer.lines)

    assert lines[0] == lines[1]
    assert lines[0][1] == f"MAIL FROM:<alice@sender.test> SIZE={len(content)} BODY=8BITMIME SMTPUTF8".encode()
    assert lines[0][3] == "RCPT TO:<bé@dest.test>".encode()


SCENARIOS: dict[str, tuple[dict[str, Any], str | None]] = {
    "mixed RCPT replies": ({"rules": {"gone": "550 5.1.1 No such user", "later": "451 4.3.0 Try later"}}, None),
    "RCPT 421 closes": ({"rules": {"closing": "421 4.3.2 Shutting down"}}, None),
    "MAIL 4xx": ({"mail_reply": "451 4.3.0 Try later"}, None),
    "MAIL 5xx": ({"mail_reply": "553 5.7.1 Sender refused"}, None),
    "final dot refused": ({"data_reply": "554 5.7.1 Spam"}, None),
    "unquotable recipient": ({}, "bad x@dest.test"),
}


@pytest.mark.parametrize("scenario", SCENARIOS)
async def test_outcomes_are_those_of_the_sequential_path(start_peer, host_of, job, options, scenario):
    peer_options, extra = SCENARIOS[scenario]
    recipients = ["ok@dest.test", "gone@dest.test", "closing@dest.test", "later@dest.test", "ok2@dest.test"]
    recipients += [extra] if extra else []
    attempts: list[HostAttempt] = []
    accepted: list[list[list[str]]] = []
    for smtp in (options, sequential(options)):
        peer = await start_peer(pipelining=True, **peer_options)
        host = host_of("mx1.dest.test", peer)
        attempt = await attempt_host(host, job([host], recipients), recipients, smtp)
        if attempt.failure is not None:  # the two peers listen on different addresses
            diagnostic = attempt.failure.diagnostic.replace(host_label(host), "mx1.dest.test[...]")
            attempt.failure = dataclasses.replace(attempt.failure, diagnostic=diagnostic.replace(" (pipelined)", ""))
        attempts.append(attempt)
        accepted.append([m.rcpt_tos for m in peer.messages + peer.refused_messages])

    pipelined, plain = attempts
    assert pipelined.results or pipelined.failure
    if extra:
        assert pipelined.results[extra].status == "5.1.3", "left out of the group, with its local result"
    assert pipelined.results == plain.results
    assert pipelined.failure == plain.failure
    assert accepted[0] == accepted[1]


async def test_refused_mail_from_answers_everyone_and_the_session_stays_in_step(start_peer, host_of, job, options):
    peer = await start_peer(pipelining=True, mail_reply=["553 5.7.1 Sender refused", "250 2.1.0 Ok"])
    pool: ConnectionPool[SmtpConnection] = ConnectionPool(idle_seconds=5.0, per_host=2, total=8)
    deliverer = Deliverer(options, pool=pool)
    host = host_of("mx1.dest.test", peer)
    try:
        refused = await deliverer.deliver(job([host], ["a@dest.test", "b@dest.test"]))
        [second] = await deliverer.deliver(job([host], ["c@dest.test"]))
    finally:
        await deliverer.close()

    assert [(r.outcome, r.smtp_code, r.status) for r in refused] == [(PERMANENT, 553, "5.7.1")] * 2
    assert second.outcome == DELIVERED
    assert [m.rcpt_tos for m in peer.messages] == [["c@dest.test"]]
    assert peer.refused_messages == []
    # The RCPT and DATA replies after the refusal (aiosmtpd: 503) were all read: the RSET
    # before the second job got its own reply, so the connection was reused.
    assert (peer.connections, peer.rsets) == (1, 1)


async def test_replies_after_a_refused_mail_from_are_read_even_when_late(raw_peer, job, options):
    need_mail = "503 5.5.1 Error: need MAIL command"
    host, peer = await raw_peer(
        mail="553 5.7.1 Sender refused", rcpt={"a": need_mail, "b": need_mail}, data=need_mail, late=0.2
    )
    pool: ConnectionPool[SmtpConnection] = ConnectionPool(idle_seconds=5.0, per_host=2, total=8)
    deliverer = Deliverer(options, pool=pool)
    try:
        refused = await deliverer.deliver(job([host], ["a@dest.test", "b@dest.test"]))
        peer.mail = "250 2.1.0 Ok"
        peer.rcpt = {}
        peer.data = "354 go ahead"
        peer.late = 0.0
        [second] = await deliverer.deliver(job([host], ["c@dest.test"]))
    finally:
        await deliverer.close()

    assert [(r.outcome, r.smtp_code) for r in refused] == [(PERMANENT, 553)] * 2
    assert second.outcome == DELIVERED
    assert peer.connections == 1, "the RSET got its own reply: the late 503s were read and ignored"
    assert b"RSET" in peer.lines


async def test_354_without_accepted_recipients_gets_a_lone_dot(raw_peer, job, options):
    host, peer = await raw_peer(rcpt={"a": "550 5.1.1 No such user", "b": "551 5.1.6 Moved"})

    attempt = await attempt_host(host, job([host]), ["a@dest.test", "b@dest.test"], options)

    assert [(r.outcome, r.smtp_code) for r in attempt.results.values()] == [(PERMANENT, 550), (PERMANENT, 551)]
    assert attempt.failure is None
    assert peer.content == [], "no message content"
    assert peer.lines[1:] == [
        b"MAIL FROM:<alice@sender.test>",
        b"RCPT TO:<a@dest.test>",
        b"RCPT TO:<b@dest.test>",
        b"DATA",
        b".",  # RFC 2920 §3.1
        b"QUIT",
    ]
    assert peer.reads[2] == b".\r\n"


@pytest.mark.parametrize(
    ("extensions", "pipelining"),
    [(("8BITMIME",), True), (("PIPELINING", "8BITMIME"), False)],
    ids=["not offered", "setting off"],
)
async def test_sequential_commands_wait_for_each_reply(raw_peer, job, options, extensions, pipelining):
    host, peer = await raw_peer(extensions=extensions)
    smtp = dataclasses.replace(options, pipelining=pipelining)

    attempt = await attempt_host(host, job([host]), ["a@dest.test", "b@dest.test"], smtp)

    assert [r.outcome for r in attempt.results.values()] == [DELIVERED, DELIVERED]
    assert peer.reads[1:5] == [
        b"MAIL FROM:<alice@sender.test>\r\n",
        b"RCPT TO:<a@dest.test>\r\n",
        b"RCPT TO:<b@dest.test>\r\n",
        b"DATA\r\n",
    ]


async def test_connection_lost_after_the_group_is_a_host_failure(raw_peer, job, options, caplog):
    host, peer = await raw_peer(group_replies=0)

    with caplog.at_level(logging.INFO, logger="kubemta_delivery_worker"):
        attempt = await attempt_host(host, job([host]), ["a@dest.test", "b@dest.test"], options)

    assert attempt.results == {}
    assert attempt.failure is not None
    assert attempt.failure.status == "4.4.2"
    assert attempt.failure.diagnostic.startswith(
        f"lost connection with mx.raw.test[{host.address}]:{host.port} while sending MAIL FROM (pipelined)"
    )
    assert not [r for r in caplog.records if getattr(r, "duplicate_possible", False)]
    assert peer.content == []


async def test_connection_lost_mid_group_keeps_the_replies_already_read(raw_peer, start_peer, host_of, job, options):
    host, _ = await raw_peer(rcpt={"a": "550 5.1.1 No such user"}, group_replies=2)
    good = await start_peer(pipelining=True)

    results = await Deliverer(options).deliver(
        job([host, host_of("mx2.dest.test", good)], ["a@dest.test", "b@dest.test"])
    )

    assert [(r.outcome, r.remote_mta) for r in results] == [(PERMANENT, "mx.raw.test"), (DELIVERED, "mx2.dest.test")]
    assert [m.rcpt_tos for m in good.messages] == [["b@dest.test"]]


async def test_group_timeout_is_a_host_failure(raw_peer, job, options):
    host, _ = await raw_peer(stall=True)
    smtp = dataclasses.replace(options, command_timeout=0.3)

    attempt = await attempt_host(host, job([host]), ["a@dest.test"], smtp)

    assert attempt.results == {}
    assert attempt.failure is not None
    assert attempt.failure.status == "4.4.2"
    assert "timed out while sending MAIL FROM (pipelined)" in attempt.failure.diagnostic


async def test_pipelining_over_tls(start_peer, host_of, job, options, tls_cert):
    peer = await start_peer(pipelining=True, tls_cert=tls_cert, rules={"gone": "550 5.1.1 No such user"})

    results = await Deliverer(options).deliver(
        job([host_of("mx1.dest.test", peer)], ["a@dest.test", "gone@dest.test", "b@dest.test"])
    )

    assert [r.outcome for r in results] == [DELIVERED, PERMANENT, DELIVERED]
    [message] = peer.messages
    assert message.tls
    assert message.rcpt_tos == ["a@dest.test", "b@dest.test"]


def test_setting_defaults_on_and_can_be_turned_off(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("KUBEMTA_SMTP_PIPELINING", raising=False)
    assert smtp_options(WorkerSettings.load()).pipelining is True

    monkeypatch.setenv("KUBEMTA_SMTP_PIPELINING", "false")
    assert smtp_options(WorkerSettings.load()).pipelining is False


@pytest.mark.parametrize("pipelining", [False, True])
async def test_any_2xx_to_rcpt_accepts_the_recipient_and_the_data_reply_decides_its_fate(
    start_peer, host_of, job, options, pipelining
):
    """A server answering RCPT with a 2xx other than 250/251 (here 252) took the recipient, so the reply to the
    final dot decides its fate. Before, such a recipient was reported delivered at RCPT (aiosmtplib only takes
    250/251), even when the server then refused the message: no bounce, the mail lost."""
    peer = await start_peer(
        pipelining=pipelining,
        rules={"odd": "252 2.1.5 Recipient ok, will try"},
        data_reply=["554 5.7.1 Message refused", "250 2.0.0 Ok: queued"],
    )
    recipients = ["odd@dest.test", "b@dest.test"]

    refused = await Deliverer(options).deliver(job([host_of("mx1.dest.test", peer)], recipients))
    assert [(r.outcome, r.smtp_code) for r in refused] == [(PERMANENT, 554), (PERMANENT, 554)]

    delivered = await Deliverer(options).deliver(job([host_of("mx1.dest.test", peer)], recipients))
    assert [(r.outcome, r.smtp_code) for r in delivered] == [(DELIVERED, 250), (DELIVERED, 250)]
    [message] = peer.messages
    assert message.rcpt_tos == recipients
