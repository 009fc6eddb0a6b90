"""End to end DKIM: mail in over SMTP, signed by the queue-manager with keys made by the real
`kubemta-admin dkim generate`, delivered by the four service processes to a test MX, and
verified as delivered by two independent verifiers, dkimpy and OpenDKIM's `opendkim-testmsg`,
both reading the public keys from a real name server (nsd) on port 53 of a loopback address.

One pipeline run per module delivers three messages: a dual-signed one (RSA + Ed25519), one from a
domain without keys, and one that bounces, so that kubemta's DSN (signed for the parent domain of
KUBEMTA_HOSTNAME) arrives at the sender's MX. The tests then check the bytes as delivered.

What opendkim-testmsg can tell: its exit status is 0 when at least one signature verifies
(libopendkim's dkim_eom() reports the first good signature), so each signature is also checked
on its own with the others removed; and libopendkim refuses a message with two Subject: fields
before looking at any signature (`dkim_chunk(): Syntax error`), so oversigning is shown to it
with a prepended Content-Type: (oversigned too, but not one of the fields it requires to be single).
"""

import asyncio
import email
import email.policy
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import dkim  # type: ignore[import-untyped]
import pytest

from tests.e2e.conftest import MailWorld, send
from tests.harness.dkim_verify import (
    TxtLookup,
    dkimpy_verdicts,
    generate_key,
    only_signature,
    opendkim_testmsg,
    signature_tags,
)
from tests.harness.dns_server import DnsServer, zone_text
from tests.harness.ports import free_port
from tests.harness.rabbitmq import BrokerNode
from tests.harness.smtp_peer import ReceivedMessage, ScriptedPeer
from tests.harness.stack import Stack

pytestmark = [pytest.mark.broker, pytest.mark.e2e]

SIGNING_DOMAIN = "signed.test"
SELECTORS = {"rsa2026": "rsa", "ed2026": "ed25519"}
HOSTNAME = "mta.kubemta.test"  # KUBEMTA_HOSTNAME: DSNs come from MAILER-DAEMON@ this name
DSN_DOMAIN = "kubemta.test"  # the closest parent of HOSTNAME with a key
DSN_SELECTOR = "bounces"
UNSIGNED_DOMAIN = "unsigned.test"
INFRA = "dkim-e2e.test"  # the MX hosts and the recipients' domain
RECIPIENT = f"bob@rcpt.{INFRA}"
REFUSED = f"nobody@rcpt.{INFRA}"
SENDER = f"alice@{SIGNING_DOMAIN}"
# last octets in this run's 127.a.b.0/24, outside tests/e2e/conftest.py HOSTS and the Dovecot test's 61
OCTETS = {"mx": 71, "bounce-mx": 72, "ns": 73, "ns-other": 74, "internet-client": 75}
LOCAL_DOMAIN = f"local.{INFRA}"  # KUBEMTA_LOCAL_DOMAINS: accepted from anyone, so never trusted by itself
FORGED_RECIPIENT = f"staff@{LOCAL_DOMAIN}"
BARE_RECIPIENT = f"app-user@rcpt.{INFRA}"  # gets a message an app library wrote without Date: and Message-ID:
DNS_PORT = 53  # libopendkim asks the C library's resolver, which only speaks to port 53
PIPELINE_TIMEOUT = 60.0


@dataclass(frozen=True)
class Keys:
    directory: Path
    lines: dict[str, list[str]]
    """Zone-file lines printed by `dkim generate`, per signing domain."""


@dataclass(frozen=True)
class Delivered:
    """The messages as the test MXs received them, and the queue-manager's DKIM counters."""

    signed: ReceivedMessage
    unsigned: ReceivedMessage
    bounce: ReceivedMessage
    forged: ReceivedMessage
    """From: the signing domain, sent by a client outside the relay networks to a local domain."""
    bare: ReceivedMessage
    """Sent by a trusted client without Date: and Message-ID:."""
    signatures: dict[tuple[str, str], float]


def address(net: str, host: str) -> str:
    return f"{net}.{OCTETS[host]}"


def dkim_zones(net: str, lines: dict[str, list[str]]) -> dict[str, str]:
    """The zones the pipeline and both verifiers use: MX routing and the DKIM key records."""
    to_bounce_mx = f"@ MX 10 bounce-mx.{INFRA}."
    return {
        INFRA: zone_text(
            INFRA,
            [
                f"mx A {address(net, 'mx')}",
                f"bounce-mx A {address(net, 'bounce-mx')}",
                "rcpt MX 10 mx",
                f"{LOCAL_DOMAIN.removesuffix('.' + INFRA)} MX 10 mx",
            ],
            ttl=30,
        ),
        SIGNING_DOMAIN: zone_text(SIGNING_DOMAIN, [to_bounce_mx, *lines[SIGNING_DOMAIN]], ttl=30),
        DSN_DOMAIN: zone_text(DSN_DOMAIN, lines[DSN_DOMAIN], ttl=30),
        UNSIGNED_DOMAIN: zone_text(UNSIGNED_DOMAIN, [to_bounce_mx], ttl=30),
    }


def compose(sender: str, recipient: str, subject: str) -> bytes:
    headers = (
        f"From: Alice <{sender}>\r\nTo: <{recipient}>\r\nSubject: {subject}\r\n"
        f"Date: Sun, 29 Nov 2026 12:00:00 +0000\r\nMessage-ID: <{subject.replace(' ', '-')}@{INFRA}>\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
    )
    return (headers + "\r\nHello,\r\n.a line with a leading dot\r\n\r\nthe end.\r\n").encode()


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    directory = tmp_path_factory.mktemp("dkim-keys")
    lines: dict[str, list[str]] = {SIGNING_DOMAIN: [], DSN_DOMAIN: []}
    for selector, algorithm in SELECTORS.items():
        lines[SIGNING_DOMAIN].append(generate_key(directory, SIGNING_DOMAIN, selector, algorithm))
    lines[DSN_DOMAIN].append(generate_key(directory, DSN_DOMAIN, DSN_SELECTOR, "rsa"))
    return Keys(directory, lines)


@pytest.fixture(scope="module")
def dkim_dns(tmp_path_factory: pytest.TempPathFactory, loopback_net: str, keys: Keys) -> Iterator[DnsServer]:
    server = DnsServer(
        tmp_path_factory.mktemp("dkim-dns"),
        address(loopback_net, "ns"),
        DNS_PORT,
        zones=dkim_zones(loopback_net, keys.lines),
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def _run_pipeline(broker_node: BrokerNode, net: str, dns: DnsServer, keys: Keys, workdir: Path) -> Delivered:
    vhost = broker_node.create_vhost()
    stack = Stack(workdir, {"KUBEMTA_AMQP_URL": vhost.url})
    world = MailWorld(net, dns, free_port(), workdir)
    mx = ScriptedPeer(
        address(net, "mx"),
        world.delivery_port,
        hostname=f"mx.{INFRA}",
        rules={"nobody": f"550 5.1.1 <{REFUSED}>: Recipient address rejected"},
    )
    bounce_mx = ScriptedPeer(address(net, "bounce-mx"), world.delivery_port, hostname=f"bounce-mx.{INFRA}")
    try:
        await mx.start()
        await bounce_mx.start()
        smtp_port = free_port()
        stack.env.update(
            world.env(
                smtp_listen=f"127.0.0.1:{smtp_port}",
                hostname=HOSTNAME,
                dkim_keys_dir=str(keys.directory),
                relay_networks="127.0.0.1/32",  # the internet client below connects from another address
                local_domains=LOCAL_DOMAIN,
            )
        )
        await stack.start()
        server = f"127.0.0.1:{smtp_port}"
        unsigned_sender = f"carol@{UNSIGNED_DOMAIN}"
        for sender, recipient, subject in (
            (SENDER, RECIPIENT, "dual signed"),
            (unsigned_sender, RECIPIENT, "no keys"),
            (SENDER, REFUSED, "will bounce"),
        ):
            outcome = await send(server, sender, [recipient], compose(sender, recipient, subject))
            assert outcome.data is not None and outcome.data[0] == 250, (subject, outcome)
        # A stranger on the internet writes From: the signing domain to a local mailbox (no relay needed).
        forgery = compose(SENDER, FORGED_RECIPIENT, "forged")
        outcome = await send(server, SENDER, [FORGED_RECIPIENT], forgery, source=address(net, "internet-client"))
        assert outcome.data is not None and outcome.data[0] == 250, ("forged", outcome)
        bare = b"".join(
            line + b"\r\n"
            for line in compose(SENDER, BARE_RECIPIENT, "bare").split(b"\r\n")[:-1]
            if not line.startswith((b"Date:", b"Message-ID:"))
        )
        outcome = await send(server, SENDER, [BARE_RECIPIENT], bare)
        assert outcome.data is not None and outcome.data[0] == 250, ("bare", outcome)
        delivered = await mx.wait_for_messages(4, timeout=PIPELINE_TIMEOUT)
        [bounce] = await bounce_mx.wait_for_messages(1, timeout=PIPELINE_TIMEOUT)
        by_recipient = {message.rcpt_tos[0]: message for message in delivered}
        by_sender = {message.mail_from: message for message in delivered if message.rcpt_tos[0] == RECIPIENT}
        signatures = {
            (algorithm, result): await stack.metric(
                "queue-manager", "kubemta_dkim_signatures_total", algorithm=algorithm, result=result
            )
            for algorithm, result in (
                ("rsa-sha256", "signed"),
                ("ed25519-sha256", "signed"),
                ("none", "no_key"),
                ("none", "untrusted"),
            )
        }
        return Delivered(
            by_sender[SENDER],
            by_sender[unsigned_sender],
            bounce,
            by_recipient[FORGED_RECIPIENT],
            by_recipient[BARE_RECIPIENT],
            signatures,
        )
    finally:
        try:
            await stack.stop()
        finally:
            await mx.stop()
            await bounce_mx.stop()
            vhost.delete()


@pytest.fixture(scope="module")
def delivered(
    broker_node: BrokerNode,
    loopback_net: str,
    dkim_dns: DnsServer,
    keys: Keys,
    tmp_path_factory: pytest.TempPathFactory,
) -> Delivered:
    workdir = tmp_path_factory.mktemp("dkim-pipeline")
    return asyncio.run(_run_pipeline(broker_node, loopback_net, dkim_dns, keys, workdir))


def header_block(message: bytes) -> bytes:
    return message.split(b"\r\n\r\n", 1)[0]


def corrupt_signature(message: bytes, index: int) -> bytes:
    """`message` with the first character of the `index`-th DKIM-Signature's b= value changed."""
    starts = [match.start() for match in re.finditer(rb"(?im)^dkim-signature:", header_block(message))]
    start = starts[index]
    end = starts[index + 1] if index + 1 < len(starts) else len(header_block(message))
    found = re.search(rb"[;\s]b=([A-Za-z0-9+/])", message[start:end])
    assert found is not None, "no b= tag"
    position = start + found.start(1)
    replacement = b"B" if message[position : position + 1] == b"A" else b"A"
    return message[:position] + replacement + message[position + 1 :]


# --- what the queue-manager signed -------------------------------------------------------------


def test_mail_from_the_signing_domain_carries_an_rsa_and_an_ed25519_signature(delivered: Delivered) -> None:
    content = delivered.signed.content
    assert content.startswith(b"DKIM-Signature:")
    headers = header_block(content).decode()
    assert headers.index("DKIM-Signature:") < headers.index("Received:")  # on top of kubemta's trace header
    tags = signature_tags(content)
    assert [tag[b"a"] for tag in tags] == [b"rsa-sha256", b"ed25519-sha256"]  # RSA topmost
    assert [tag[b"s"] for tag in tags] == [b"rsa2026", b"ed2026"]
    for tag in tags:
        assert tag[b"d"] == SIGNING_DOMAIN.encode()
        assert tag[b"c"] == b"relaxed/relaxed"
        assert b"l" not in tag
        signed = re.split(rb"\s*:\s*", tag[b"h"].strip())
        assert signed.count(b"subject") == 2 and signed.count(b"from") == 2  # oversigned: one more than present
        assert signed.count(b"content-type") == 2
    # the queue-manager counted what it did: the dual-signed message and the one that bounced, the DSN (RSA)
    assert delivered.signatures[("rsa-sha256", "signed")] == 4
    assert delivered.signatures[("ed25519-sha256", "signed")] == 3
    assert delivered.signatures[("none", "no_key")] == 1
    assert delivered.signatures[("none", "untrusted")] == 1


def test_trusted_mail_without_date_and_message_id_gets_both_signed(delivered: Delivered, dkim_dns: DnsServer) -> None:
    """RFC 6409 §8: the submission service adds them, before signing, so the signature covers them."""
    content = delivered.bare.content
    parsed = email.message_from_bytes(content, policy=email.policy.default)
    assert parsed["Date"] is not None and parsed["Date"].datetime is not None
    assert re.fullmatch(r"<[0-9A-Za-z]+@mta\.kubemta\.test>", str(parsed["Message-ID"]))
    for tag in signature_tags(content):
        signed = re.split(rb"\s*:\s*", tag[b"h"].strip())
        assert signed.count(b"date") == 2 and signed.count(b"message-id") == 2
    assert dkimpy_verdicts(content, TxtLookup(dkim_dns.address, DNS_PORT)) == [True, True]


def test_a_strangers_from_the_signing_domain_is_never_signed(delivered: Delivered) -> None:
    """Not a signing oracle: mail from outside the relay networks to a local domain goes out unsigned,
    although its From: is a domain kubemta holds keys for (the forger would get a DMARC-aligned signature)."""
    content = delivered.forged.content
    assert delivered.forged.mail_from == SENDER
    assert f"From: Alice <{SENDER}>".encode() in content
    assert b"DKIM-Signature" not in content


def test_dkimpy_verifies_both_signatures_with_the_keys_in_the_zone(delivered: Delivered, dkim_dns: DnsServer) -> None:
    content = delivered.signed.content
    lookup = TxtLookup(dkim_dns.address, DNS_PORT)
    assert dkim.verify(content, dnsfunc=lookup)  # dkimpy's one-call API: the topmost signature
    assert dkimpy_verdicts(content, lookup) == [True, True]
    assert set(lookup.queried) == {f"{selector}._domainkey.{SIGNING_DOMAIN}" for selector in SELECTORS}


def test_opendkim_verifies_each_signature_on_its_own(delivered: Delivered, dkim_dns: DnsServer, tmp_path: Path) -> None:
    content = delivered.signed.content
    assert opendkim_testmsg(content, dkim_dns.address, tmp_path / "both") == (0, "")
    for index, algorithm in enumerate((b"rsa-sha256", b"ed25519-sha256")):
        alone = only_signature(content, index)
        assert [tag[b"a"] for tag in signature_tags(alone)] == [algorithm]
        assert opendkim_testmsg(alone, dkim_dns.address, tmp_path / str(index)) == (0, ""), algorithm


def test_opendkim_testmsg_passes_a_message_when_any_one_signature_verifies(
    delivered: Delivered, dkim_dns: DnsServer, tmp_path: Path
) -> None:
    """Why the test above checks each signature alone: a whole-message 0 says nothing about the second one."""
    content = delivered.signed.content
    lookup = TxtLookup(dkim_dns.address, DNS_PORT)
    for index in (0, 1):
        broken = corrupt_signature(content, index)
        assert dkimpy_verdicts(broken, lookup) == [index != 0, index != 1]
        assert opendkim_testmsg(broken, dkim_dns.address, tmp_path / f"one-{index}") == (0, "")
        status, stderr = opendkim_testmsg(only_signature(broken, index), dkim_dns.address, tmp_path / f"alone-{index}")
        assert status != 0 and "Bad signature" in stderr
    both = corrupt_signature(corrupt_signature(content, 0), 1)
    status, stderr = opendkim_testmsg(both, dkim_dns.address, tmp_path / "both")
    assert status != 0 and "Bad signature" in stderr


# --- tampering ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tamper:
    change: Callable[[bytes], bytes]
    verifies: bool
    opendkim_error: str
    """What opendkim-testmsg reports for each signature; "" when it verifies."""


TAMPERING = {
    "signed-header-changed": Tamper(
        lambda m: m.replace(b"Subject: dual signed", b"Subject: dual SIGNED"), False, "Bad signature"
    ),
    # oversigned: h= lists one more Subject than the message had. libopendkim rejects two Subject:
    # fields as a syntax error (RFC 5322 §3.6 allows one) before it checks a signature.
    "subject-prepended": Tamper(lambda m: b"Subject: Urgent: pay now\r\n" + m, False, "Syntax error"),
    # oversigned as well, and not a field libopendkim requires to be single: its signature check fails
    "content-type-prepended": Tamper(lambda m: b"Content-Type: text/html\r\n" + m, False, "Bad signature"),
    "unsigned-header-added": Tamper(lambda m: b"X-Foo: added on the way\r\n" + m, True, ""),
}


@pytest.mark.parametrize("case", list(TAMPERING))
def test_dkimpy_after_tampering(delivered: Delivered, dkim_dns: DnsServer, case: str) -> None:
    tamper = TAMPERING[case]
    changed = tamper.change(delivered.signed.content)
    assert changed != delivered.signed.content
    lookup = TxtLookup(dkim_dns.address, DNS_PORT)
    assert dkimpy_verdicts(changed, lookup) == [tamper.verifies, tamper.verifies]
    assert len(lookup.queried) == 2  # both keys were fetched: the verdicts are about the signatures


@pytest.mark.parametrize("case", list(TAMPERING))
def test_opendkim_after_tampering(delivered: Delivered, dkim_dns: DnsServer, tmp_path: Path, case: str) -> None:
    tamper = TAMPERING[case]
    for index in (0, 1):
        alone = tamper.change(only_signature(delivered.signed.content, index))
        status, stderr = opendkim_testmsg(alone, dkim_dns.address, tmp_path / str(index))
        if tamper.verifies:
            assert (status, stderr) == (0, ""), index
        else:
            assert status != 0 and tamper.opendkim_error in stderr, (index, stderr)


# --- bounces, unsigned mail, and the verifiers' DNS ----------------------------------------------


def test_a_bounce_is_signed_for_the_hostnames_domain_and_verifies(
    delivered: Delivered, dkim_dns: DnsServer, tmp_path: Path
) -> None:
    bounce = delivered.bounce
    assert bounce.mail_from == "" and bounce.rcpt_tos == [SENDER]
    report = email.message_from_bytes(bounce.content, policy=email.policy.compat32)
    assert report.get_content_type() == "multipart/report"
    assert report["From"] == f"Mail Delivery System <MAILER-DAEMON@{HOSTNAME}>"
    [tags] = signature_tags(bounce.content)
    assert (tags[b"d"], tags[b"s"], tags[b"a"]) == (DSN_DOMAIN.encode(), DSN_SELECTOR.encode(), b"rsa-sha256")
    lookup = TxtLookup(dkim_dns.address, DNS_PORT)
    assert dkimpy_verdicts(bounce.content, lookup) == [True]
    assert lookup.queried == [f"{DSN_SELECTOR}._domainkey.{DSN_DOMAIN}"]
    assert opendkim_testmsg(bounce.content, dkim_dns.address, tmp_path / "dsn") == (0, "")
    changed = bounce.content.replace(b"Auto-Submitted: auto-replied", b"Auto-Submitted: no", 1)
    assert changed != bounce.content
    # Auto-Submitted is not signed (not in the signer's list): changing it keeps the signature good
    assert dkimpy_verdicts(changed, lookup) == [True]
    status, stderr = opendkim_testmsg(
        bounce.content.replace(b"Subject: ", b"Subject: Re: ", 1), dkim_dns.address, tmp_path / "dsn-changed"
    )
    assert status != 0 and "Bad signature" in stderr


def test_mail_from_a_domain_without_keys_arrives_unsigned(delivered: Delivered) -> None:
    content = delivered.unsigned.content
    assert delivered.unsigned.mail_from == f"carol@{UNSIGNED_DOMAIN}"
    assert b"dkim-signature:" not in header_block(content).lower()
    assert signature_tags(content) == []
    assert content.startswith(b"Received: ")


def test_both_verifiers_fail_when_the_zone_publishes_other_keys(
    delivered: Delivered, dkim_dns: DnsServer, loopback_net: str, tmp_path: Path
) -> None:
    """The verifiers really read the zone: the same names, served by another nsd with other keys, fail."""
    other_lines: dict[str, list[str]] = {SIGNING_DOMAIN: [], DSN_DOMAIN: []}
    for selector, algorithm in SELECTORS.items():
        other_lines[SIGNING_DOMAIN].append(generate_key(tmp_path / "other-keys", SIGNING_DOMAIN, selector, algorithm))
    other_lines[DSN_DOMAIN].append(generate_key(tmp_path / "other-keys", DSN_DOMAIN, DSN_SELECTOR, "rsa"))
    other = DnsServer(
        tmp_path / "dns", address(loopback_net, "ns-other"), DNS_PORT, zones=dkim_zones(loopback_net, other_lines)
    )
    content = delivered.signed.content
    other.start()
    try:
        lookup = TxtLookup(other.address, DNS_PORT)
        assert dkimpy_verdicts(content, lookup) == [False, False]
        assert len(lookup.queried) == 2
        assert dkimpy_verdicts(delivered.bounce.content, lookup) == [False]
        for index in (0, 1):
            alone = only_signature(content, index)
            status, stderr = opendkim_testmsg(alone, other.address, tmp_path / f"other-{index}")
            assert status != 0 and "Bad signature" in stderr, (index, stderr)
            # the same message, the real zone: good
            assert opendkim_testmsg(alone, dkim_dns.address, tmp_path / f"real-{index}") == (0, "")
        status, stderr = opendkim_testmsg(delivered.bounce.content, other.address, tmp_path / "other-dsn")
        assert status != 0 and "Bad signature" in stderr
    finally:
        other.stop()
