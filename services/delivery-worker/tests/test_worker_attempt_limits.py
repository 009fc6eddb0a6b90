"""The bounds of one delivery attempt against real loopback peers: the address and session caps
(Postfix smtp_mx_address_limit / smtp_mx_session_limit), the attempt deadline with every timeout
cut to the time left (SMTP and LMTP), and the watchdog for what no single timeout bounds.

Black holes are listeners that accept and never greet (a closed loopback port refuses at once,
which is not a black hole). The assertions are on what was tried (the peers count connections
and commands) and on outcomes; each delivery is awaited within a bound.
"""

import asyncio
import dataclasses
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from kubemta.v1 import message_pb2
from kubemta_delivery_worker.attempt_limits import AttemptDeadline, AttemptLimits
from kubemta_delivery_worker.deliverer import Deliverer
from kubemta_delivery_worker.pool import ConnectionPool
from kubemta_delivery_worker.transaction import SmtpConnection, SmtpOptions
from tests.harness.smtp_peer import ScriptedPeer

DELIVERED, TEMPORARY = message_pb2.OUTCOME_DELIVERED, message_pb2.OUTCOME_TEMPORARY
BOUND = 30.0  # seconds any one delivery in these tests may take before the test fails


@dataclass
class StallingServer:
    """A hand-written SMTP/LMTP server: greets, answers EHLO/LHLO (PIPELINING when asked), MAIL, RCPT and
    DATA, each reply `delay` seconds late; never answers the command `stall` ("MAIL", "RCPT", "DATA", or
    "." for the final dot) and reads on until the client closes the connection."""

    address: str
    stall: str = ""
    delay: float = 0.0
    pipelining: bool = False
    connections: int = 0
    commands: list[str] = field(default_factory=list)
    stalled: int = 0  # connections the client closed while the server was stalling
    messages: int = 0
    port: int = 0
    _server: asyncio.Server | None = None
    _writers: list[asyncio.StreamWriter] = field(default_factory=list)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.address, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in self._writers:
                writer.close()
            async with asyncio.timeout(5):
                await self._server.wait_closed()

    async def _reply(self, writer: asyncio.StreamWriter, text: str) -> None:
        if self.delay:
            await asyncio.sleep(self.delay)
        writer.write(text.encode() + b"\r\n")
        await writer.drain()

    async def _stall(self, reader: asyncio.StreamReader) -> None:
        while await reader.read(4096):
            pass
        self.stalled += 1

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.append(writer)
        try:
            writer.write(b"220 stalling.peer.test ESMTP\r\n")
            while line := await reader.readline():
                command = line.decode().rstrip("\r\n")
                self.commands.append(command)
                verb = command.split(" ", 1)[0].split(":", 1)[0].upper()
                if verb == self.stall:
                    return await self._stall(reader)
                if verb in ("EHLO", "LHLO"):
                    extra = "250-PIPELINING\r\n" if self.pipelining else ""
                    writer.write(f"250-stalling.peer.test\r\n{extra}250 8BITMIME\r\n".encode())
                elif verb == "DATA":
                    await self._reply(writer, "354 go ahead")
                    while (chunk := await reader.readline()) != b".\r\n":
                        if not chunk:
                            return  # closed before the final dot: no message
                    if self.stall == ".":
                        return await self._stall(reader)
                    self.messages += 1
                    await self._reply(writer, "250 2.0.0 queued")
                elif verb == "QUIT":
                    writer.write(b"221 bye\r\n")
                    return
                else:
                    await self._reply(writer, "250 2.0.0 ok")
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def stalling(loopback: Callable[[], str]) -> AsyncIterator[Callable[..., Awaitable[StallingServer]]]:
    servers: list[StallingServer] = []

    async def start(**kwargs: object) -> StallingServer:
        server = StallingServer(loopback(), **kwargs)  # type: ignore[arg-type]
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop()


def host(name: str, peer: ScriptedPeer | StallingServer) -> message_pb2.RouteHost:
    return message_pb2.RouteHost(hostname=name, address=peer.address, port=peer.port)


async def deliver(deliverer: Deliverer, job: message_pb2.DeliveryJob) -> list[message_pb2.RecipientResult]:
    async with asyncio.timeout(BOUND):
        return await deliverer.deliver(job)


def fast(options: SmtpOptions, *, connect: float = 0.3, command: float = 60.0, data: float = 60.0) -> SmtpOptions:
    """Short connect/greeting timeout, long command and data timeouts: only the deadline can cut those."""
    return dataclasses.replace(options, connect_timeout=connect, command_timeout=command, data_timeout=data)


# -- the address and session caps ----------------------------------------------------------------


async def test_at_most_five_black_holed_addresses_are_tried(start_peer, job, options):
    holes = [await start_peer(silent=True) for _ in range(8)]

    results = await deliver(Deliverer(fast(options)), job([host(f"mx{i}.dest.test", p) for i, p in enumerate(holes)]))

    assert [p.connections for p in holes] == [1, 1, 1, 1, 1, 0, 0, 0]
    [result] = results
    assert result.outcome == TEMPORARY and result.status == "4.4.1"
    assert result.diagnostic == (
        f"connect to mx4.dest.test[{holes[4].address}]:{holes[4].port}: timed out waiting for the server greeting"
    )


async def test_address_limit_is_a_setting_and_zero_means_all(start_peer, job, options):
    holes = [await start_peer(silent=True) for _ in range(7)]
    the_job = job([host(f"mx{i}.dest.test", p) for i, p in enumerate(holes)])

    await deliver(Deliverer(fast(options), limits=AttemptLimits(addresses=2)), the_job)
    assert [p.connections for p in holes] == [1, 1, 0, 0, 0, 0, 0]

    await deliver(Deliverer(fast(options), limits=AttemptLimits(addresses=0)), the_job)
    assert [p.connections for p in holes] == [2, 2, 1, 1, 1, 1, 1]


async def test_at_most_two_greeted_sessions_per_attempt(start_peer, job, options):
    deferring = [await start_peer(mail_reply="451 4.3.0 try again later") for _ in range(3)]
    healthy = await start_peer()
    hosts = [*(host(f"mx{i}.dest.test", p) for i, p in enumerate(deferring)), host("mx9.dest.test", healthy)]

    [result] = await deliver(Deliverer(fast(options)), job(hosts))

    assert [p.connections for p in deferring] == [1, 1, 0] and healthy.connections == 0
    assert result.outcome == TEMPORARY and result.smtp_code == 451
    assert result.diagnostic.startswith("host mx1.dest.test")


async def test_hosts_that_fail_before_the_greeting_do_not_count_as_sessions(start_peer, job, options):
    holes = [await start_peer(silent=True) for _ in range(2)]
    deferring = await start_peer(mail_reply="451 4.3.0 try again later")
    healthy = await start_peer()
    hosts = [host("h0.dest.test", holes[0]), host("d.dest.test", deferring), host("h1.dest.test", holes[1])]

    [result] = await deliver(Deliverer(fast(options)), job([*hosts, host("ok.dest.test", healthy)]))

    assert result.outcome == DELIVERED
    assert [p.connections for p in (*holes, deferring, healthy)] == [1, 1, 1, 1]


async def test_a_session_refused_at_the_greeting_does_not_count(loopback, job, options):
    refusing = [ScriptedPeer(loopback(), 0) for _ in range(2)]
    healthy = ScriptedPeer(loopback(), 0)
    servers = []
    for peer in refusing:  # a 554 greeting (RFC 5321 §3.1) is no completed greeting
        server = await asyncio.start_server(_refuse_greeting(peer), peer.address, 0)
        peer.port = server.sockets[0].getsockname()[1]
        servers.append(server)
    await healthy.start()
    try:
        hosts = [host(f"r{i}.dest.test", p) for i, p in enumerate(refusing)]
        [result] = await deliver(Deliverer(fast(options)), job([*hosts, host("ok.dest.test", healthy)]))
    finally:
        await healthy.stop()
        for server in servers:
            server.close()

    assert result.outcome == DELIVERED
    assert [p.connections for p in refusing] == [1, 1]


def _refuse_greeting(peer: ScriptedPeer) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer.connections += 1
        writer.write(b"554 5.7.1 no service for you\r\n")
        await writer.drain()
        writer.close()

    return handle


# -- the deadline ---------------------------------------------------------------------------------


async def test_the_deadline_ends_an_attempt_over_black_holes(start_peer, job, options):
    holes = [await start_peer(silent=True) for _ in range(8)]
    limits = AttemptLimits(deadline=2.5, addresses=0, sessions=0)

    [result] = await deliver(
        Deliverer(fast(options, connect=1.0), limits=limits),
        job([host(f"mx{i}.dest.test", p) for i, p in enumerate(holes)]),
    )

    tried = sum(p.connections for p in holes)
    assert 1 <= tried <= 3 and [p.connections for p in holes[tried:]] == [0] * (8 - tried)
    assert result.outcome == TEMPORARY and result.status == "4.4.1"
    assert result.diagnostic.startswith(
        f"the delivery attempt's deadline (2.5s, KUBEMTA_DELIVERY_ATTEMPT_DEADLINE) has passed after {tried} of 8 "
        "route address(es); last: connect to "
    )


async def test_a_server_stalling_after_the_dot_keeps_the_unknown_fate_and_no_other_host(
    start_peer, job, options, caplog
):
    slow = await start_peer(data_delay=BOUND)
    healthy = await start_peer()
    the_job = job([host("slow.dest.test", slow), host("ok.dest.test", healthy)], ("a@dest.test", "b@dest.test"))

    results = await deliver(Deliverer(fast(options), limits=AttemptLimits(deadline=2.0)), the_job)

    assert [r.outcome for r in results] == [TEMPORARY, TEMPORARY]
    assert {r.status for r in results} == {"4.4.2"}
    assert results[0].diagnostic == (
        f"timed out with slow.dest.test[{slow.address}]:{slow.port} while waiting for the reply to the end of data "
        "-- message may be sent more than once"
    )
    assert healthy.connections == 0  # the message may have been taken: never sent elsewhere in this attempt
    assert "possible duplicate delivery to 2 recipient(s)" in caplog.text


@pytest.mark.parametrize(("stall", "stage"), [("MAIL", "sending MAIL FROM"), ("RCPT", "sending RCPT TO")])
async def test_a_server_stalling_before_the_dot_is_cut_by_the_deadline_and_deferred(
    stalling, start_peer, job, options, stall, stage
):
    stalled = await stalling(stall=stall)
    healthy = await start_peer()
    the_job = job([host("slow.dest.test", stalled), host("ok.dest.test", healthy)])

    [result] = await deliver(Deliverer(fast(options), limits=AttemptLimits(deadline=2.0)), the_job)

    assert result.outcome == TEMPORARY and result.status == "4.4.2"
    assert re.fullmatch(
        r"the delivery attempt's deadline \(2s, KUBEMTA_DELIVERY_ATTEMPT_DEADLINE\) has passed after 1 of 2 route "
        rf"address\(es\); last: conversation with slow\.dest\.test\[[0-9.]+\]:\d+ timed out while {stage}",
        result.diagnostic,
    ), result.diagnostic
    assert healthy.connections == 0 and stalled.messages == 0


async def test_the_watchdog_ends_a_pipelined_group_whose_replies_trickle_in(stalling, job, options):
    """Each reply comes within the command timeout, so only the watchdog can bound the group."""
    trickling = await stalling(delay=1.0, pipelining=True)
    recipients = tuple(f"r{i}@dest.test" for i in range(6))

    results = await deliver(
        Deliverer(fast(options, command=5.0), limits=AttemptLimits(deadline=2.5)),
        job([host("slow.dest.test", trickling)], recipients),
    )

    assert [r.outcome for r in results] == [TEMPORARY] * 6
    assert {r.status for r in results} == {"4.4.2"}
    assert (
        "has passed after 1 of 1 route address(es); last: lost connection with slow.dest.test" in results[0].diagnostic
    )
    assert trickling.messages == 0


async def test_no_message_data_is_sent_once_the_deadline_has_passed(stalling, job, options):
    """The 354 to a pipelined DATA arrives after the deadline (each reply within the group's timeout)
    but before the watchdog: the content is not sent, so the recipients are deferred, never duplicated."""
    trickling = await stalling(delay=0.85, pipelining=True)  # MAIL, RCPT, RCPT, DATA: 354 after ~3.4 s

    results = await deliver(
        Deliverer(fast(options, command=5.0), limits=AttemptLimits(deadline=3.0)),
        job([host("slow.dest.test", trickling)], ("a@dest.test", "b@dest.test")),
    )

    assert [r.outcome for r in results] == [TEMPORARY, TEMPORARY]
    assert "timed out while sending message body" in results[0].diagnostic
    assert "may be sent more than once" not in results[0].diagnostic
    assert trickling.messages == 0


async def test_lmtp_gets_the_same_deadline(stalling, job, options):
    stalled = await stalling(stall="RCPT")
    the_job = job([host("mailbox.dest.test", stalled)])
    the_job.route.kind = message_pb2.TRANSPORT_KIND_LMTP

    [result] = await deliver(Deliverer(fast(options), limits=AttemptLimits(deadline=2.0)), the_job)

    assert result.outcome == TEMPORARY and result.status == "4.4.2"
    assert "has passed after 1 of 1 route address(es); last: conversation with mailbox.dest.test" in result.diagnostic
    assert "timed out while sending RCPT TO" in result.diagnostic
    assert stalled.commands[0].startswith("LHLO ")


async def test_lmtp_stalling_after_the_dot_keeps_the_unknown_fate(stalling, job, options):
    stalled = await stalling(stall=".")
    the_job = job([host("mailbox.dest.test", stalled)])
    the_job.route.kind = message_pb2.TRANSPORT_KIND_LMTP

    [result] = await deliver(Deliverer(fast(options), limits=AttemptLimits(deadline=2.0)), the_job)

    assert result.outcome == TEMPORARY and result.status == "4.4.2"
    assert result.diagnostic.startswith("timed out with mailbox.dest.test")
    assert result.diagnostic.endswith("-- message may be sent more than once")


async def test_a_reused_connection_runs_under_the_new_job_deadline(start_peer, job, options):
    peer = await start_peer()
    pool: ConnectionPool[SmtpConnection] = ConnectionPool(idle_seconds=60, per_host=2, total=4)
    deliverer = Deliverer(fast(options), pool=pool, limits=AttemptLimits(deadline=1.0))
    the_job = job([host("mx.dest.test", peer)])
    try:
        [first] = await deliver(deliverer, the_job)
        await asyncio.sleep(1.5)  # the first attempt's deadline is long past; its session waits in the cache
        [second] = await deliver(deliverer, the_job)
    finally:
        await deliverer.close()

    assert first.outcome == second.outcome == DELIVERED
    assert peer.connections == 1 and len(peer.messages) == 2


# -- the deadline object --------------------------------------------------------------------------


class _Session:
    def __init__(self) -> None:
        self.closed = 0
        self.gone = asyncio.Event()

    def close(self) -> None:
        self.closed += 1
        self.gone.set()


async def test_the_deadline_clamps_and_its_watchdog_closes_only_what_it_still_watches():
    with AttemptDeadline(0.05) as deadline:
        assert 0 < deadline.clamp(60) <= 0.05 and deadline.clamp(0.01) == 0.01
        watched, moved = _Session(), _Session()
        deadline.watch(watched)
        deadline.watch(moved)
        deadline.unwatch(moved)
        async with asyncio.timeout(BOUND):
            await watched.gone.wait()
        assert deadline.passed and deadline.clamp(60) == 0.0
        late = _Session()
        deadline.watch(late)
    assert (watched.closed, moved.closed, late.closed) == (1, 0, 1)


async def test_a_finished_attempt_closes_nothing_later():
    session = _Session()
    with AttemptDeadline(0.01) as deadline:
        deadline.watch(session)
    await asyncio.sleep(1.2)  # past the deadline and its grace
    assert session.closed == 0
