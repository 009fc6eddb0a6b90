"""LMTP delivery (RFC 2033) against a scripted LMTP peer on loopback (TCP) or a unix socket:
one reply per accepted recipient after the final dot, each its own outcome."""

import asyncio
import dataclasses
import logging
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from kubemta.v1 import message_pb2
from kubemta_delivery_worker.deliverer import Deliverer
from kubemta_delivery_worker.lmtp import attempt_lmtp_host

DELIVERED = message_pb2.OUTCOME_DELIVERED
TEMPORARY = message_pb2.OUTCOME_TEMPORARY
PERMANENT = message_pb2.OUTCOME_PERMANENT
SILENT = "silent"


@dataclass
class LmtpPeer:
    """A scripted LMTP server: RCPT and end-of-data replies per recipient, optionally dropping after the dot.

    After the dot the replies for all accepted recipients go out in ONE write (as Dovecot does),
    unless `replies_before_drop` cuts them short and closes the connection.
    """

    rcpt: dict[str, str] = field(default_factory=dict)
    after_data: dict[str, str] = field(default_factory=dict)
    extensions: tuple[str, ...] = ("8BITMIME", "ENHANCEDSTATUSCODES", "PIPELINING")
    greeting: str = "220 lmtp.peer.test LMTP ready"
    mail_reply: str = "250 2.1.0 Ok"
    data_reply: str = "354 Go ahead"
    replies_before_drop: int | None = None
    commands: list[str] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    server: asyncio.Server | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted: list[str] = []
        try:
            writer.write(self.greeting.encode() + b"\r\n")
            while line := await reader.readline():
                command = line.decode("utf-8").rstrip("\r\n")
                self.commands.append(command)
                verb = command.split(" ", 1)[0].split(":", 1)[0].upper()
                if verb == "LHLO":
                    lines = ["lmtp.peer.test", *self.extensions]
                    text = "".join(f"250-{item}\r\n" for item in lines[:-1]) + f"250 {lines[-1]}\r\n"
                    writer.write(text.encode())
                elif verb == "MAIL":
                    accepted.clear()
                    writer.write(self.mail_reply.encode() + b"\r\n")
                elif verb == "RCPT":
                    address = re.search(r"<(.*)>", command)
                    assert address is not None
                    reply = self.rcpt.get(address.group(1), "250 2.1.5 Ok")
                    if reply.startswith("2"):
                        accepted.append(address.group(1))
                    writer.write(reply.encode() + b"\r\n")
                elif verb == "DATA":
                    writer.write(self.data_reply.encode() + b"\r\n")
                    if not self.data_reply.startswith("354"):
                        continue
                    body = b""
                    while (chunk := await reader.readline()) != b".\r\n":
                        if not chunk:
                            return
                        body += chunk
                    self.bodies.append(body)
                    replies = [self.after_data.get(rcpt, f"250 2.0.0 <{rcpt}> Saved") for rcpt in accepted]
                    if self.replies_before_drop is not None:
                        replies = replies[: self.replies_before_drop]
                    if SILENT in replies:
                        replies = replies[: replies.index(SILENT)]
                        writer.write("".join(f"{reply}\r\n" for reply in replies).encode())
                        await reader.read()  # until the client gives up and closes
                        return
                    writer.write("".join(f"{reply}\r\n" for reply in replies).encode())
                    if self.replies_before_drop is not None:
                        await writer.drain()
                        return
                elif verb == "RSET":
                    accepted.clear()
                    writer.write(b"250 2.0.0 Ok\r\n")
                elif verb == "QUIT":
                    writer.write(b"221 2.0.0 Bye\r\n")
                    await writer.drain()
                    return
                else:
                    writer.write(b"500 5.5.1 Unknown command\r\n")
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    @property
    def recipients(self) -> list[str]:
        return [re.sub(r"^RCPT TO:<(.*)>.*$", r"\1", c) for c in self.commands if c.startswith("RCPT")]


@pytest.fixture
async def lmtp_peers() -> AsyncIterator[list[LmtpPeer]]:
    peers: list[LmtpPeer] = []
    yield peers
    for peer in peers:
        if peer.server is not None:
            peer.server.close()
            await asyncio.wait_for(peer.server.wait_closed(), 5)


@pytest.fixture
def tcp_peer(loopback: Callable[[], str], lmtp_peers: list[LmtpPeer]):
    async def start(**script) -> tuple[LmtpPeer, message_pb2.RouteHost]:
        peer = LmtpPeer(**script)
        address = loopback()
        peer.server = await asyncio.start_server(peer.handle, address, 0)
        lmtp_peers.append(peer)
        port = peer.server.sockets[0].getsockname()[1]
        return peer, message_pb2.RouteHost(hostname="dovecot.mail.test", address=address, port=port)

    return start


@pytest.fixture
def unix_peer(tmp_path: Path, lmtp_peers: list[LmtpPeer]):
    async def start(**script) -> tuple[LmtpPeer, message_pb2.RouteHost]:
        peer = LmtpPeer(**script)
        path = tmp_path / f"lmtp{len(lmtp_peers)}.sock"
        peer.server = await asyncio.start_unix_server(peer.handle, str(path))
        lmtp_peers.append(peer)
        return peer, message_pb2.RouteHost(unix_socket=str(path))

    return start


def lmtp_job(job, hosts, recipients, **kwargs):
    the_job = job(hosts, recipients, **kwargs)
    the_job.route.kind = message_pb2.TRANSPORT_KIND_LMTP
    the_job.route.source = "transport"
    return the_job


async def test_mixed_replies_after_dot_are_per_recipient_outcomes(tcp_peer, job, options):
    peer, host = await tcp_peer(
        rcpt={"dave@local.test": "550 5.1.1 <dave@local.test> User doesn't exist"},
        after_data={
            "bob@local.test": "452 4.2.2 <bob@local.test> Mailbox is full",
            "carol@local.test": "550 5.2.1 <carol@local.test> Mailbox disabled",
        },
    )
    recipients = ["alice@local.test", "bob@local.test", "carol@local.test", "dave@local.test"]

    results = await Deliverer(options).deliver(lmtp_job(job, [host], recipients))

    by_rcpt = {r.recipient: r for r in results}
    assert [r.recipient for r in results] == recipients
    assert (by_rcpt["alice@local.test"].outcome, by_rcpt["alice@local.test"].status) == (DELIVERED, "2.0.0")
    assert by_rcpt["alice@local.test"].diagnostic.startswith("250 2.0.0 <alice@local.test> Saved")
    assert (by_rcpt["bob@local.test"].outcome, by_rcpt["bob@local.test"].smtp_code) == (TEMPORARY, 452)
    assert by_rcpt["bob@local.test"].status == "4.2.2"
    assert (by_rcpt["carol@local.test"].outcome, by_rcpt["carol@local.test"].status) == (PERMANENT, "5.2.1")
    assert (by_rcpt["dave@local.test"].outcome, by_rcpt["dave@local.test"].status) == (PERMANENT, "5.1.1")
    assert {r.remote_mta for r in results} == {"dovecot.mail.test"}
    # one transaction: LHLO (never EHLO/HELO), the message sent once for the three accepted recipients
    assert peer.commands[0] == "LHLO worker.kubemta.test"
    assert not any(c.startswith(("EHLO", "HELO")) for c in peer.commands)
    assert peer.recipients == recipients
    assert len(peer.bodies) == 1
    assert peer.commands[-1] == "QUIT"


async def test_connection_lost_after_the_dot_defers_the_unanswered_with_a_duplicate_warning(
    tcp_peer, job, options, caplog
):
    peer, host = await tcp_peer(replies_before_drop=1)
    recipients = ["alice@local.test", "bob@local.test", "carol@local.test"]

    with caplog.at_level(logging.WARNING, logger="kubemta_delivery_worker.lmtp"):
        results = await Deliverer(options).deliver(lmtp_job(job, [host], recipients))

    assert results[0].outcome == DELIVERED
    for result in results[1:]:
        assert (result.outcome, result.status, result.smtp_code) == (TEMPORARY, "4.4.2", 0)
        assert "may be sent more than once" in result.diagnostic
    [record] = [r for r in caplog.records if getattr(r, "duplicate_possible", False)]
    assert record.queue_id == "Q123TEST"
    assert record.unanswered == ["bob@local.test", "carol@local.test"]
    assert len(peer.bodies) == 1


async def test_silence_after_the_dot_times_out_to_a_temporary_failure(tcp_peer, job, options):
    _, host = await tcp_peer(after_data={"bob@local.test": SILENT})
    results = await attempt_lmtp_host(
        host,
        lmtp_job(job, [host], ["alice@local.test", "bob@local.test"]),
        ["alice@local.test", "bob@local.test"],
        dataclasses.replace(options, data_timeout=0.5),
    )
    assert results.results["alice@local.test"].outcome == DELIVERED
    bob = results.results["bob@local.test"]
    assert (bob.outcome, bob.status) == (TEMPORARY, "4.4.2")
    assert bob.diagnostic.startswith("timed out with")
    assert results.failure is None


async def test_delivers_over_a_unix_socket(unix_peer, job, options):
    peer, host = await unix_peer()
    content = b"Subject: dots\r\n\r\n.leading dot\r\nlast line"

    [result] = await Deliverer(options).deliver(lmtp_job(job, [host], ["alice@local.test"], content=content))

    assert result.outcome == DELIVERED
    assert result.remote_mta == host.unix_socket
    assert peer.bodies == [b"Subject: dots\r\n\r\n..leading dot\r\nlast line\r\n"]  # dot-stuffed, CRLF-terminated


async def test_missing_unix_socket_is_a_temporary_no_answer(tmp_path, job, options):
    host = message_pb2.RouteHost(unix_socket=str(tmp_path / "absent.sock"))
    [result] = await Deliverer(options).deliver(lmtp_job(job, [host], ["alice@local.test"]))
    assert (result.outcome, result.status) == (TEMPORARY, "4.4.1")
    assert str(tmp_path / "absent.sock") in result.diagnostic


async def test_greeting_refusal_leaves_recipients_for_the_next_host(tcp_peer, job, options):
    # (a 421 would be a "slow down" that stops at this host, see destinations.py)
    first, busy = await tcp_peer(greeting="554 5.3.2 No service here")
    second, ok = await tcp_peer()

    [result] = await Deliverer(options).deliver(lmtp_job(job, [busy, ok], ["alice@local.test"]))

    assert result.outcome == DELIVERED
    assert len(second.bodies) == 1
    assert first.bodies == []


async def test_mail_from_temporary_refusal_defers_every_recipient(tcp_peer, job, options):
    _, host = await tcp_peer(mail_reply="451 4.3.0 Temporary failure")
    results = await Deliverer(options).deliver(lmtp_job(job, [host], ["a@local.test", "b@local.test"]))
    assert {(r.outcome, r.status, r.smtp_code) for r in results} == {(TEMPORARY, "4.3.0", 451)}


async def test_data_refused_applies_to_every_accepted_recipient(tcp_peer, job, options):
    _, host = await tcp_peer(data_reply="554 5.6.0 No thanks", rcpt={"b@local.test": "550 5.1.1 unknown"})
    results = await Deliverer(options).deliver(lmtp_job(job, [host], ["a@local.test", "b@local.test"]))
    assert [(r.outcome, r.status) for r in results] == [(PERMANENT, "5.6.0"), (PERMANENT, "5.1.1")]


async def test_all_recipients_refused_sends_no_data(tcp_peer, job, options):
    peer, host = await tcp_peer(rcpt={"a@local.test": "550 5.1.1 unknown"})
    [result] = await Deliverer(options).deliver(lmtp_job(job, [host], ["a@local.test"]))
    assert result.outcome == PERMANENT
    assert "DATA" not in peer.commands
    assert peer.commands[-2:] == ["RSET", "QUIT"]


async def test_mail_from_announces_8bitmime_for_8bit_content(tcp_peer, job, options):
    peer, host = await tcp_peer()
    content = "Subject: café\r\n\r\nnaïve\r\n".encode()
    [result] = await Deliverer(options).deliver(lmtp_job(job, [host], ["a@local.test"], content=content))
    assert result.outcome == DELIVERED
    [mail] = [c for c in peer.commands if c.startswith("MAIL")]
    assert mail == "MAIL FROM:<alice@sender.test> BODY=8BITMIME"


async def test_smtputf8_message_to_a_server_without_it_bounces_5_6_7(tcp_peer, job, options):
    peer, host = await tcp_peer()
    the_job = lmtp_job(job, [host], ["a@local.test"], sender="ålice@sender.test", smtputf8=True)
    [result] = await Deliverer(options).deliver(the_job)
    assert (result.outcome, result.status) == (PERMANENT, "5.6.7")
    assert not any(c.startswith("MAIL") for c in peer.commands)


async def test_smtputf8_is_used_when_offered(tcp_peer, job, options):
    peer, host = await tcp_peer(extensions=("8BITMIME", "SMTPUTF8", "SIZE 1000000"))
    the_job = lmtp_job(job, [host], ["jörg@local.test"])
    [result] = await Deliverer(options).deliver(the_job)
    assert result.outcome == DELIVERED
    [mail] = [c for c in peer.commands if c.startswith("MAIL")]
    assert mail.startswith("MAIL FROM:<alice@sender.test> SIZE=") and mail.endswith(" SMTPUTF8")
    assert peer.recipients == ["jörg@local.test"]
