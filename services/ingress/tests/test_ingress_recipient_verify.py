"""Recipient verification at RCPT (recipient_verify.py), through a real SMTP client (smtplib) against the
ingress as the service builds it (`build_servers` with `build_verifier`), asking a real LMTP server
(aiosmtpd's LMTP, tests/harness/lmtp_peer.py) on a loopback address or a unix socket.

Unknown users of a local domain are refused at RCPT with 550 5.1.1, so they never become bounces to a
forged sender (backscatter); when the mailbox server gives no answer, the client gets 450 4.1.1 and retries.
"""

import asyncio
import shutil
import smtplib
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from kubemta_common.config_types import ListenAddress
from kubemta_ingress import recipient_verify_config
from kubemta_ingress.__main__ import build_servers
from kubemta_ingress.recipient_verify import RecipientVerifier
from kubemta_ingress.server import SmtpServer
from kubemta_ingress.settings import IngressSettings
from tests.harness.dns_server import DnsServer, random_loopback_address, zone_text
from tests.harness.dns_server import free_port as dns_free_port
from tests.harness.dovecot import Dovecot
from tests.harness.fake_publisher import FakePublisher
from tests.harness.ingress_kit import eventually, only_message
from tests.harness.lmtp_peer import LmtpPeer
from tests.harness.ports import free_port, random_loopback_net

LOCAL = "example.org"
SENDER = "someone@forged.example"
Rcpt = tuple[int, str]


@dataclass
class Rig:
    """An ingress whose local domain LOCAL is verified; `peer` is its mailbox server."""

    server: SmtpServer
    verifier: RecipientVerifier
    publisher: FakePublisher
    peer: LmtpPeer | None = None
    settings: IngressSettings = field(default_factory=IngressSettings)

    @property
    def port(self) -> int:
        return self.server.port

    async def rcpts(self, *recipients: str, sender: str = SENDER, utf8: bool = False) -> list[Rcpt]:
        """One session: MAIL, then RCPT for each recipient; the RCPT replies (code, text)."""
        return await asyncio.to_thread(_rcpts, self.port, sender, list(recipients), utf8)

    async def rcpt(self, recipient: str) -> Rcpt:
        [reply] = await self.rcpts(recipient)
        return reply


def _rcpts(port: int, sender: str, recipients: list[str], utf8: bool) -> list[Rcpt]:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo("client.example")
        if utf8:
            client.command_encoding = "utf-8"
        client.mail(sender, ["SMTPUTF8"] if utf8 else [])
        replies = []
        for recipient in recipients:
            code, text = client.rcpt(recipient)
            replies.append((code, text.decode()))
        return replies


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


type StartRig = Callable[..., Awaitable[Rig]]


@pytest.fixture
def address() -> str:
    """A loopback address of this run for the mailbox server."""
    return f"{random_loopback_net()}.24"


@pytest.fixture
async def start_rig() -> AsyncIterator[StartRig]:
    """`await start_rig(peer, **settings)`: the peer started, the ingress built from settings and started."""
    started: list[Rig] = []

    async def start(peer: LmtpPeer | None = None, **overrides: Any) -> Rig:
        if peer is not None:
            await peer.start()
        values: dict[str, Any] = {
            "local_domains": [LOCAL],
            "relay_networks": [],  # the test client is a stranger, as on an MX
            "recipient_verify_timeout": 5.0,
            "hostname": "mx.kubemta.test",
        }
        if peer is not None:
            values["transports"] = f"{LOCAL}={peer.transport_spec}"
        values.update(overrides)
        settings = IngressSettings(**values).model_copy(update={"smtp_listen": ListenAddress("127.0.0.1", 0)})
        verifier = recipient_verify_config.build_verifier(settings)
        publisher = FakePublisher()
        [server] = build_servers(settings, publisher, None, verifier)
        await server.start()
        rig = Rig(server, verifier, publisher, peer, settings)
        started.append(rig)
        return rig

    yield start
    for rig in started:
        await rig.server.stop(1.0)
        await rig.verifier.close()
        if rig.peer is not None:
            await rig.peer.stop()


async def test_a_known_user_is_accepted_and_an_unknown_one_refused_550_5_1_1(start_rig: StartRig, address: str) -> None:
    rig = await start_rig(LmtpPeer(address, users={"alice"}))
    refused_before = sample("kubemta_messages_rejected_total", reason="unknown_recipient")
    unknown_before = sample("kubemta_recipient_verifications_total", source="lmtp", result="unknown")

    known, unknown = await rig.rcpts(f"alice@{LOCAL}", f"nobody@{LOCAL}")

    assert known[0] == 250
    assert unknown == (
        550,
        f"5.1.1 <nobody@{LOCAL}>: Recipient address rejected: undeliverable address: host {address}[{address}] "
        f"said: 550 5.1.1 <nobody@{LOCAL}> User doesn't exist: nobody@{LOCAL} (in reply to RCPT TO command)",
    )
    assert rig.peer is not None and rig.peer.rcpts == [f"alice@{LOCAL}", f"nobody@{LOCAL}"]
    assert rig.peer.helos == ["mx.kubemta.test"] * 2 and rig.peer.messages == []
    assert sample("kubemta_messages_rejected_total", reason="unknown_recipient") == refused_before + 1
    assert sample("kubemta_recipient_verifications_total", source="lmtp", result="unknown") == unknown_before + 1


async def test_only_the_verified_recipients_are_queued(start_rig: StartRig, address: str) -> None:
    rig = await start_rig(LmtpPeer(address, users={"alice"}))

    def send() -> dict[str, tuple[int, bytes]]:
        with smtplib.SMTP("127.0.0.1", rig.port, timeout=30) as client:
            return client.sendmail(SENDER, [f"alice@{LOCAL}", f"nobody@{LOCAL}"], b"Subject: hi\r\n\r\nhello\r\n")

    refused = await asyncio.to_thread(send)

    assert list(refused) == [f"nobody@{LOCAL}"] and refused[f"nobody@{LOCAL}"][0] == 550
    [message] = [only_message(rig.publisher)]
    assert list(message.recipients) == [f"alice@{LOCAL}"]


async def test_trusted_clients_are_verified_too(start_rig: StartRig, address: str) -> None:
    rig = await start_rig(LmtpPeer(address, users={"alice"}), relay_networks=["127.0.0.0/8"])
    assert [code for code, _ in await rig.rcpts(f"alice@{LOCAL}", f"nobody@{LOCAL}", "anyone@elsewhere.example")] == [
        250,
        550,
        250,  # relaying is theirs; only local recipients are verified
    ]
    assert rig.peer is not None and rig.peer.rcpts == [f"alice@{LOCAL}", f"nobody@{LOCAL}"]


async def test_a_mailbox_server_that_is_down_gets_450_4_1_1(start_rig: StartRig, address: str) -> None:
    port = free_port(address)  # nothing listens there
    rig = await start_rig(transports=f"{LOCAL}=lmtp:[{address}]:{port}")
    before = sample("kubemta_messages_rejected_total", reason="unverified_recipient")

    code, text = await rig.rcpt(f"alice@{LOCAL}")

    assert code == 450
    assert text.startswith(f"4.1.1 <alice@{LOCAL}>: Recipient address rejected: unverified address: connect to ")
    assert "refused" in text.lower()
    assert sample("kubemta_messages_rejected_total", reason="unverified_recipient") == before + 1
    assert sample("kubemta_recipient_verifications_total", source="lmtp", result="tempfail") >= 1


@pytest.mark.parametrize(
    ("peer_options", "expected"),
    [
        ({"rules": {"alice": "451 4.3.0 Temporary internal error"}}, "said: 451 4.3.0 Temporary internal error"),
        ({"greeting": "554 5.3.2 no service"}, "refused to talk to me: 554 5.3.2 no service"),
        ({"rules": {"alice": "452 4.2.2 Mailbox is full"}}, "452 4.2.2 Mailbox is full"),
    ],
)
async def test_a_temporary_or_non_recipient_answer_is_450_and_never_cached(
    start_rig: StartRig, address: str, peer_options: dict[str, Any], expected: str
) -> None:
    peer = LmtpPeer(address, users={"alice"}, **peer_options)
    rig = await start_rig(peer)

    first = await rig.rcpt(f"alice@{LOCAL}")
    second = await rig.rcpt(f"alice@{LOCAL}")

    for code, text in (first, second):
        assert code == 450 and text.startswith("4.1.1 ") and expected in text, text
    assert peer.connections == 2  # a temporary failure is asked again


async def test_a_silent_mailbox_server_is_a_bounded_450(start_rig: StartRig, address: str) -> None:
    rig = await start_rig(LmtpPeer(address, silent=True), recipient_verify_timeout=0.5)
    code, text = await rig.rcpt(f"alice@{LOCAL}")
    assert code == 450 and "timed out" in text


async def test_answers_are_cached_known_and_unknown(start_rig: StartRig, address: str) -> None:
    peer = LmtpPeer(address, users={"alice"})
    rig = await start_rig(peer)
    hits = sample("kubemta_recipient_probe_cache_hits_total")
    probes = sample("kubemta_recipient_probes_total", result="unknown")

    first = await rig.rcpts(f"alice@{LOCAL}", f"nobody@{LOCAL}")
    again = await rig.rcpts(f"alice@{LOCAL}", f"nobody@{LOCAL}", f"nobody@{LOCAL.upper()}")

    assert [code for code, _ in first] == [250, 550]
    assert [code for code, _ in again] == [250, 550, 550]
    assert first[1][1] == again[1][1]  # the cached answer quotes the server as the probe did
    assert peer.connections == 2, "one probe per address; the domain's case does not matter"
    assert sample("kubemta_recipient_probe_cache_hits_total") == hits + 3
    assert sample("kubemta_recipient_probes_total", result="unknown") == probes + 1


async def test_concurrent_questions_about_one_address_share_one_probe(start_rig: StartRig, address: str) -> None:
    peer = LmtpPeer(address, users={"alice"})
    rig = await start_rig(peer)
    peer.gate.clear()
    sessions = [asyncio.create_task(rig.rcpt(f"alice@{LOCAL}")) for _ in range(4)]
    await eventually(lambda: peer.in_rcpt == 1)
    peer.gate.set()
    assert [code for code, _ in await asyncio.gather(*sessions)] == [250] * 4
    assert peer.connections == 1


async def test_probes_run_at_most_the_concurrency_limit_at_once(start_rig: StartRig, address: str) -> None:
    peer = LmtpPeer(address, users={f"user{n}" for n in range(5)})
    rig = await start_rig(peer, recipient_verify_concurrency=2, recipient_verify_timeout=30.0)
    prober = rig.verifier._prober  # the counts the test waits on
    assert prober is not None
    peer.gate.clear()
    sessions = [asyncio.create_task(rig.rcpt(f"user{n}@{LOCAL}")) for n in range(5)]

    await eventually(lambda: peer.in_rcpt == 2 and prober.waiting == 3)
    assert peer.connections == 2  # the three others wait for a slot without connecting
    peer.gate.set()

    assert [code for code, _ in await asyncio.gather(*sessions)] == [250] * 5
    assert peer.connections == 5 and peer.max_in_rcpt == 2


async def test_waiting_for_a_slot_is_bounded_too(start_rig: StartRig, address: str) -> None:
    peer = LmtpPeer(address, users={"alice", "bob"})
    rig = await start_rig(peer, recipient_verify_concurrency=1, recipient_verify_timeout=0.5)
    peer.gate.clear()  # the mailbox server never answers RCPT
    replies = await asyncio.gather(rig.rcpt(f"alice@{LOCAL}"), rig.rcpt(f"bob@{LOCAL}"))
    assert [code for code, _ in replies] == [450, 450]  # no hang: the conversation and the wait both end
    assert peer.max_in_rcpt == 1


async def test_postmaster_is_accepted_without_asking(start_rig: StartRig, address: str) -> None:
    peer = LmtpPeer(address)  # knows nobody
    rig = await start_rig(peer)
    replies = await rig.rcpts(f"postmaster@{LOCAL}", f"PostMaster@{LOCAL.upper()}", "<Postmaster>")
    assert [code for code, _ in replies] == [250, 250, 250]
    assert peer.connections == 0


async def test_the_session_error_limit_bounds_how_many_addresses_one_session_tries(
    start_rig: StartRig, address: str
) -> None:
    peer = LmtpPeer(address)
    rig = await start_rig(peer, max_errors=3)
    with pytest.raises(smtplib.SMTPServerDisconnected):
        await rig.rcpts(*(f"guess{n}@{LOCAL}" for n in range(10)))
    assert len(peer.rcpts) == 3


async def test_verification_can_be_turned_off(start_rig: StartRig, address: str) -> None:
    peer = LmtpPeer(address)
    rig = await start_rig(peer, recipient_verify=False)
    assert (await rig.rcpt(f"nobody@{LOCAL}"))[0] == 250
    assert peer.connections == 0


async def test_a_local_domain_without_a_source_is_accepted_with_a_warning(
    start_rig: StartRig, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("WARNING"):
        rig = await start_rig(local_domains=[LOCAL, "smtp-routed.example"], transports="smtp-routed.example=smtp:[h]")
    assert (await rig.rcpt(f"nobody@{LOCAL}"))[0] == 250
    [warning] = [record for record in caplog.records if "not verified" in record.getMessage()]
    assert "example.org, smtp-routed.example" in warning.getMessage() and "backscatter" in warning.getMessage()


async def test_an_smtputf8_address_is_probed_with_smtputf8(start_rig: StartRig, address: str) -> None:
    peer = LmtpPeer(address, users={"jörg"})
    rig = await start_rig(peer)
    replies = await rig.rcpts(f"jörg@{LOCAL}", f"jürgen@{LOCAL}", utf8=True)
    assert [code for code, _ in replies] == [250, 550]
    assert peer.mail_params[0] == ["SMTPUTF8"]


async def test_an_smtputf8_address_for_a_server_without_smtputf8_is_refused_5_6_7(
    start_rig: StartRig, address: str
) -> None:
    peer = LmtpPeer(address, users={"jörg"}, smtputf8=False)
    rig = await start_rig(peer)
    [(code, text)] = await rig.rcpts(f"jörg@{LOCAL}", utf8=True)
    assert code == 550 and text.startswith(f"5.6.7 <jörg@{LOCAL}>: Recipient address rejected: ")
    assert peer.rcpts == []


async def test_hostile_local_parts_reach_the_mailbox_server_verbatim_or_not_at_all(
    start_rig: StartRig, address: str
) -> None:
    peer = LmtpPeer(address)
    rig = await start_rig(peer)
    encoded_word = "=?utf-8?q?=0D=0AAction=3A_delivered?="
    replies = await rig.rcpts(f"{encoded_word}@{LOCAL}", f"{'x' * 300}@{LOCAL}")
    assert [code for code, _ in replies] == [550, 550], replies
    assert peer.rcpt_args == [f"TO:<{encoded_word}@{LOCAL}>", f"TO:<{'x' * 300}@{LOCAL}>"]
    assert all("\r" not in text and "\n" not in text for _, text in replies)


async def test_an_lmtp_unix_socket_is_asked_too(start_rig: StartRig, tmp_path: Path) -> None:
    peer = LmtpPeer(unix_path=tmp_path / "lmtp.sock", users={"alice"})
    rig = await start_rig(peer)
    assert [code for code, _ in await rig.rcpts(f"alice@{LOCAL}", f"nobody@{LOCAL}")] == [250, 550]


async def test_a_parent_domain_transport_entry_covers_the_local_domain(start_rig: StartRig, address: str) -> None:
    peer = LmtpPeer(address, users={"alice"})
    await peer.start()
    rig = await start_rig(local_domains=[f"mail.{LOCAL}"], transports=f".{LOCAL}={peer.transport_spec}")
    rig.peer = peer
    assert rig.settings.transports.lookup(f"mail.{LOCAL}") is not None
    assert [code for code, _ in await rig.rcpts(f"alice@mail.{LOCAL}", f"nobody@mail.{LOCAL}")] == [250, 550]


async def test_a_recipient_map_is_used_and_re_read(start_rig: StartRig, tmp_path: Path) -> None:
    path = tmp_path / LOCAL
    path.write_text("# example.org\nalice\nBob@Example.org\n", encoding="utf-8")
    rig = await start_rig(recipient_maps=[f"{LOCAL}={path}"], recipient_map_check_interval=0)
    before = sample("kubemta_recipient_verifications_total", source="map", result="unknown")

    replies = await rig.rcpts(f"ALICE@{LOCAL}", f"bob@{LOCAL}", f"carol@{LOCAL}")

    assert [code for code, _ in replies] == [250, 250, 550]
    assert replies[2][1] == (
        f"5.1.1 <carol@{LOCAL}>: Recipient address rejected: User unknown in local recipient table"
    )
    assert sample("kubemta_recipient_verifications_total", source="map", result="unknown") == before + 1

    fresh = path.with_name("next")
    fresh.write_text("carol\n", encoding="utf-8")
    fresh.replace(path)
    assert [code for code, _ in await rig.rcpts(f"alice@{LOCAL}", f"carol@{LOCAL}")] == [550, 250]


async def test_a_recipient_map_wins_over_the_lmtp_route(start_rig: StartRig, address: str, tmp_path: Path) -> None:
    path = tmp_path / LOCAL
    path.write_text("alice\n", encoding="utf-8")
    peer = LmtpPeer(address, users={"alice", "bob"})
    rig = await start_rig(peer, recipient_maps=[f"{LOCAL}={path}"])
    assert [code for code, _ in await rig.rcpts(f"alice@{LOCAL}", f"bob@{LOCAL}")] == [250, 550]
    assert peer.connections == 0


ZONE = "verify.test"


@pytest.fixture(scope="module")
def lmtp_zone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DnsServer, str]]:
    """A real DNS server (NSD) whose `mailstore.verify.test` is a loopback address of this run."""
    mailstore = f"{random_loopback_net()}.25"
    ns = random_loopback_address()
    records = [f"mailstore A {mailstore}", "v6only AAAA ::1"]
    server = DnsServer(tmp_path_factory.mktemp("nsd"), ns, dns_free_port(ns), {ZONE: zone_text(ZONE, records)})
    with server:
        yield server, mailstore


async def test_an_lmtp_host_name_is_looked_up_through_the_configured_name_servers(
    start_rig: StartRig, lmtp_zone: tuple[DnsServer, str]
) -> None:
    dns, mailstore = lmtp_zone
    peer = LmtpPeer(mailstore, users={"alice"})
    await peer.start()
    rig = await start_rig(
        transports=f"{LOCAL}=lmtp:mailstore.{ZONE}:{peer.port}", dns_nameservers=[dns.nameserver], dns_timeout=3.0
    )
    rig.peer = peer
    replies = await rig.rcpts(f"alice@{LOCAL}", f"nobody@{LOCAL}")
    assert [code for code, _ in replies] == [250, 550]
    assert f"host mailstore.{ZONE}[{mailstore}] said: 550 5.1.1" in replies[1][1]


async def test_an_lmtp_host_name_without_addresses_is_a_450(
    start_rig: StartRig, lmtp_zone: tuple[DnsServer, str]
) -> None:
    dns, _ = lmtp_zone
    rig = await start_rig(transports=f"{LOCAL}=lmtp:missing.{ZONE}:24", dns_nameservers=[dns.nameserver])
    code, text = await rig.rcpt(f"alice@{LOCAL}")
    assert code == 450
    assert f"Host or domain name not found. Name service error for name=missing.{ZONE}" in text


@pytest.fixture(scope="module")
def dovecot() -> Iterator[Dovecot]:
    """A real mailbox server: Dovecot's LMTP on a loopback address, with the user alice."""
    workdir = Path(tempfile.mkdtemp(prefix="kubemta-dovecot-"))  # traversable by Dovecot's mail user
    address = f"{random_loopback_net()}.26"
    server = Dovecot(workdir, address, free_port(address), free_port(address), {"alice": "alice-password"})
    try:
        with server:
            yield server
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


async def test_a_real_dovecot_is_asked_over_tcp_and_its_unix_socket(start_rig: StartRig, dovecot: Dovecot) -> None:
    for transport in (f"lmtp:[{dovecot.address}]:{dovecot.lmtp_port}", f"lmtp:unix:{dovecot.lmtp_socket}"):
        rig = await start_rig(transports=f"{LOCAL}={transport}")
        known, unknown, utf8 = await rig.rcpts(f"alice@{LOCAL}", f"nobody@{LOCAL}", f"jörg@{LOCAL}", utf8=True)
        assert known[0] == 250, known
        assert unknown[0] == 550 and unknown[1].startswith(f"5.1.1 <nobody@{LOCAL}>: Recipient address rejected: ")
        assert f"said: 550 5.1.1 <nobody@{LOCAL}> User doesn't exist: nobody@{LOCAL}" in unknown[1]
        assert utf8[0] == 550, utf8
    inbox = dovecot.mail_dir("alice") / "new"
    assert not inbox.exists() or not any(inbox.iterdir()), "a probe never delivers anything"
