"""A reused session that pipelines sends the RSET it owes (RFC 5321 §4.1.1.5) in front of its next
group (RFC 2920 §3.1): one write and one round trip per reused transaction fewer. A session that
fails that RSET (refused, or gone) is closed before any content and replaced by a new one, as a
cached session that fails a sequential RSET is; and a buffered reply is read without arming a timer."""

import asyncio
from collections.abc import Callable

import pytest
from aiosmtplib.protocol import SMTPProtocol

from kubemta.v1 import message_pb2
from kubemta_delivery_worker import wire
from kubemta_delivery_worker.deliverer import Deliverer
from kubemta_delivery_worker.pool import ConnectionPool
from kubemta_delivery_worker.transaction import SmtpConnection
from tests.harness.smtp_peer import DROP

DELIVERED = message_pb2.OUTCOME_DELIVERED
REUSED = "kubemta_smtp_connections_reused_total"


def make_pool() -> ConnectionPool[SmtpConnection]:
    return ConnectionPool(idle_seconds=5.0, per_host=2, total=8)


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every write the SMTP client makes on its connections."""
    seen: list[bytes] = []
    write = SMTPProtocol.write

    def spy(protocol: SMTPProtocol, data: bytes) -> None:
        seen.append(data)
        write(protocol, data)

    monkeypatch.setattr(SMTPProtocol, "write", spy)
    return seen


async def test_the_rset_of_a_reused_session_leads_its_pipelined_group(
    start_peer, host_of, job, options, metric, writes
):
    peer = await start_peer(pipelining=True)
    deliverer = Deliverer(options, pool=make_pool())
    host = host_of("mx1.dest.test", peer)
    reused_before = metric(REUSED)
    try:
        [first] = await deliverer.deliver(job([host], ["a@dest.test"]))
        before = len(writes)
        second, third = await deliverer.deliver(job([host], ["b@dest.test", "c@dest.test"]))
    finally:
        await deliverer.close()

    assert (first.outcome, second.outcome, third.outcome) == (DELIVERED,) * 3
    assert [m.rcpt_tos for m in peer.messages] == [["a@dest.test"], ["b@dest.test", "c@dest.test"]]
    assert (peer.connections, peer.rsets) == (1, 1)
    assert metric(REUSED) == reused_before + 1
    group = (
        b"RSET\r\nMAIL FROM:<alice@sender.test> SIZE=61\r\nRCPT TO:<b@dest.test>\r\nRCPT TO:<c@dest.test>\r\nDATA\r\n"
    )
    second_writes = writes[before:]
    assert second_writes[0] == group, "RSET, MAIL, RCPTs and DATA in one write"
    assert len([w for w in second_writes if not w.startswith(b"QUIT")]) == 2, "the group, then the content"


@pytest.mark.parametrize("rset_reply", [DROP, "500 5.5.1 Error: no RSET today", "421 4.3.2 Shutting down"])
async def test_a_reused_session_failing_its_pipelined_rset_is_replaced(
    start_peer, host_of, job, options, metric, writes, rset_reply
):
    peer = await start_peer(pipelining=True)
    deliverer = Deliverer(options, pool=make_pool())
    host = host_of("mx1.dest.test", peer)
    reused_before = metric(REUSED)
    try:
        await deliverer.deliver(job([host], ["a@dest.test"]))
        peer.rset_reply = rset_reply
        [result] = await deliverer.deliver(job([host], ["b@dest.test"]))
        await asyncio.sleep(0.05)  # the server notices the closed session
    finally:
        await deliverer.close()

    assert result.outcome == DELIVERED
    assert (peer.connections, peer.rsets) == (2, 1)
    assert metric(REUSED) == reused_before
    # The stale session was closed before any content: the message went once, on the new session.
    assert [m.rcpt_tos for m in peer.messages] == [["a@dest.test"], ["b@dest.test"]]
    assert peer.refused_messages == []
    assert sum(w.endswith(b"\r\n.\r\n") for w in writes) == 2


async def test_a_session_reused_without_pipelining_keeps_its_own_rset(start_peer, host_of, job, options, writes):
    peer = await start_peer(pipelining=False)
    deliverer = Deliverer(options, pool=make_pool())
    host = host_of("mx1.dest.test", peer)
    try:
        await deliverer.deliver(job([host], ["a@dest.test"]))
        await deliverer.deliver(job([host], ["b@dest.test"]))
    finally:
        await deliverer.close()

    assert (peer.connections, peer.rsets) == (1, 1)
    assert b"RSET\r\n" in writes


class _Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()


async def test_a_buffered_reply_is_read_without_a_timer(monkeypatch: pytest.MonkeyPatch):
    reader = wire._ReplyReader(asyncio.Protocol())
    loop = asyncio.get_running_loop()
    timers: list[float] = []
    call_later: Callable[..., asyncio.TimerHandle] = loop.call_later

    def counting(delay: float, *args: object, **kwargs: object) -> asyncio.TimerHandle:
        timers.append(delay)
        return call_later(delay, *args, **kwargs)

    monkeypatch.setattr(loop, "call_later", counting)
    reader.data_received(b"250 2.0.0 Ok\r\n250-2.1.0 first\r\n250 2.1.0 second\r\n")

    assert (await reader.reply(5.0)).code == 250
    assert (await reader.reply(5.0)).message == "2.1.0 first\n2.1.0 second"
    assert timers == []
    waiting = asyncio.ensure_future(reader.reply(5.0))
    await asyncio.sleep(0)
    reader.data_received(b"354 go")
    await asyncio.sleep(0)
    assert not waiting.done()
    reader.data_received(b" ahead\r\n")
    assert (await waiting).code == 354
    assert timers == [5.0], "one timer for a reply that had to be waited for"
