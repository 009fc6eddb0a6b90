"""End to end: 8-bit mail to a server without 8BITMIME (RFC 6152 §3), DKIM-signed on the way.

The four services run as processes; a trusted client (127.0.0.1, in KUBEMTA_RELAY_NETWORKS) submits
with smtplib; the MX hosts are aiosmtpd peers found through a real name server (nsd), one of which
leaves 8BITMIME out of its EHLO. The signing domain has an RSA key made by `dkim generate` and an
Ed25519 key made by `openssl genpkey -algorithm ed25519` (PKCS#8 PEM, issue 11 item 12), both
published in the zone. dkimpy and OpenDKIM's opendkim-testmsg verify the bytes as delivered.

- An 8-bit multipart message to two domains, one whose MX lacks 8BITMIME: the queue-manager makes
  it 7-bit before signing (RFC 6376 §5.3), so both servers get the same 7-bit bytes and both
  signatures verify; no BODY=8BITMIME is sent.
- An 8-bit message from a domain without keys: the worker converts it for the old server.
- An 8-bit message without MIME header fields: it cannot be converted, so the old server never sees
  it and the sender gets a DSN with status 5.6.3.
"""

import asyncio
import base64
import email
import email.policy
import subprocess
from collections.abc import Iterator
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
from tests.harness.mime_parts import decoded_parts
from tests.harness.ports import free_port
from tests.harness.rabbitmq import BrokerNode
from tests.harness.smtp_peer import ReceivedMessage, ScriptedPeer
from tests.harness.stack import Stack

pytestmark = [pytest.mark.broker, pytest.mark.e2e]

INFRA = "eightbit-e2e.test"
SIGNING_DOMAIN = "signed-8bit.test"
UNSIGNED_DOMAIN = "unsigned-8bit.test"
OLD = f"bob@old.{INFRA}"  # its MX does not offer 8BITMIME
NEW = f"carol@new.{INFRA}"  # its MX does
SENDER = f"alice@{SIGNING_DOMAIN}"
# last octets in this run's 127.a.b.0/24, outside tests/e2e/conftest.py HOSTS and the other e2e modules' octets
OCTETS = {"old-mx": 81, "new-mx": 82, "ns": 83, "bounce-mx": 84}
DNS_PORT = 53  # libopendkim asks the C library's resolver, which only speaks to port 53
PIPELINE_TIMEOUT = 60.0

MULTIPART = (
    "From: Alice <{sender}>\r\n"
    "To: <{old}>, <{new}>\r\n"
    "Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n"
    "Date: Sun, 29 Nov 2026 12:00:00 +0000\r\n"
    "Message-ID: <{tag}@eightbit-e2e.test>\r\n"
    "MIME-Version: 1.0\r\n"
    'Content-Type: multipart/alternative; boundary="=_alt_8bit"\r\n'
    "Content-Transfer-Encoding: 8bit\r\n"
    "\r\n"
    "--=_alt_8bit\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "Content-Transfer-Encoding: 8bit\r\n"
    "\r\n"
    "Grüße aus Köln, schöne Straße.\r\n"
    ".a line with a leading dot\r\n"
    "--=_alt_8bit\r\n"
    "Content-Type: text/html; charset=utf-8\r\n"
    "Content-Transfer-Encoding: 8bit\r\n"
    "\r\n"
    "<p>Grüße aus Köln — “schöne” Straße.</p>\r\n"
    "--=_alt_8bit--\r\n"
)
NON_MIME = (
    "From: Alice <{sender}>\r\nTo: <{old}>\r\nSubject: no MIME\r\nDate: Sun, 29 Nov 2026 12:00:00 +0000\r\n"
    "Message-ID: <non-mime@eightbit-e2e.test>\r\n\r\nGrüße ohne MIME.\r\n"
)


@dataclass(frozen=True)
class Keys:
    directory: Path
    lines: list[str]
    """Zone-file lines of the signing domain's key records."""


@dataclass(frozen=True)
class Delivered:
    old_signed: ReceivedMessage
    new_signed: ReceivedMessage
    old_unsigned: ReceivedMessage
    bounce: ReceivedMessage
    old_count: int
    submitted: bytes


def address(net: str, host: str) -> str:
    return f"{net}.{OCTETS[host]}"


def openssl_ed25519_key(directory: Path, domain: str, selector: str) -> str:
    """A PKCS#8 PEM Ed25519 key from the real openssl as `<domain>/<selector>.key`; its record as a zone line."""
    pem = subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519"], capture_output=True, check=True, timeout=60)
    path = directory / domain / f"{selector}.key"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pem.stdout)
    der = subprocess.run(
        ["openssl", "pkey", "-pubout", "-outform", "DER"], input=pem.stdout, capture_output=True, check=True, timeout=60
    ).stdout
    public = base64.b64encode(der[-32:]).decode("ascii")  # RFC 8410: the raw key closes the SubjectPublicKeyInfo
    return f'{selector}._domainkey.{domain}. IN TXT ( "v=DKIM1; k=ed25519; p={public}" )'


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    directory = tmp_path_factory.mktemp("dkim-keys-8bit")
    lines = [
        generate_key(directory, SIGNING_DOMAIN, "rsa8", "rsa"),
        openssl_ed25519_key(directory, SIGNING_DOMAIN, "pem8"),
    ]
    return Keys(directory, lines)


@pytest.fixture(scope="module")
def dns(tmp_path_factory: pytest.TempPathFactory, loopback_net: str, keys: Keys) -> Iterator[DnsServer]:
    to_bounce_mx = f"@ MX 10 bounce-mx.{INFRA}."
    zones = {
        INFRA: zone_text(
            INFRA,
            [
                f"old-mx A {address(loopback_net, 'old-mx')}",
                f"new-mx A {address(loopback_net, 'new-mx')}",
                f"bounce-mx A {address(loopback_net, 'bounce-mx')}",
                "old MX 10 old-mx",
                "new MX 10 new-mx",
            ],
            ttl=30,
        ),
        SIGNING_DOMAIN: zone_text(SIGNING_DOMAIN, [to_bounce_mx, *keys.lines], ttl=30),
        UNSIGNED_DOMAIN: zone_text(UNSIGNED_DOMAIN, [to_bounce_mx], ttl=30),
    }
    server = DnsServer(tmp_path_factory.mktemp("dns-8bit"), address(loopback_net, "ns"), DNS_PORT, zones=zones)
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def _run_pipeline(broker_node: BrokerNode, net: str, dns: DnsServer, keys: Keys, workdir: Path) -> Delivered:
    vhost = broker_node.create_vhost()
    stack = Stack(workdir, {"KUBEMTA_AMQP_URL": vhost.url})
    world = MailWorld(net, dns, free_port(), workdir)
    old_mx = ScriptedPeer(address(net, "old-mx"), world.delivery_port, hostname=f"old-mx.{INFRA}", eight_bit_mime=False)
    new_mx = ScriptedPeer(address(net, "new-mx"), world.delivery_port, hostname=f"new-mx.{INFRA}")
    bounce_mx = ScriptedPeer(address(net, "bounce-mx"), world.delivery_port, hostname=f"bounce-mx.{INFRA}")
    try:
        for peer in (old_mx, new_mx, bounce_mx):
            await peer.start()
        smtp_port = free_port()
        stack.env.update(
            world.env(
                smtp_listen=f"127.0.0.1:{smtp_port}", dkim_keys_dir=str(keys.directory), relay_networks="127.0.0.1/32"
            )
        )
        await stack.start()
        server = f"127.0.0.1:{smtp_port}"
        submitted = MULTIPART.format(sender=SENDER, old=OLD, new=NEW, tag="signed").encode()
        unsigned_sender = f"carol@{UNSIGNED_DOMAIN}"
        for sender, recipients, content in (
            (SENDER, [OLD, NEW], submitted),
            (unsigned_sender, [OLD], MULTIPART.format(sender=unsigned_sender, old=OLD, new=NEW, tag="u").encode()),
            (SENDER, [OLD], NON_MIME.format(sender=SENDER, old=OLD).encode()),
        ):
            outcome = await send(server, sender, recipients, content)
            assert outcome.data is not None and outcome.data[0] == 250, (sender, outcome)
        old = await old_mx.wait_for_messages(2, timeout=PIPELINE_TIMEOUT)
        [new] = await new_mx.wait_for_messages(1, timeout=PIPELINE_TIMEOUT)
        [bounce] = await bounce_mx.wait_for_messages(1, timeout=PIPELINE_TIMEOUT)
        by_sender = {message.mail_from: message for message in old}
        return Delivered(by_sender[SENDER], new, by_sender[unsigned_sender], bounce, len(old_mx.messages), submitted)
    finally:
        try:
            await stack.stop()
        finally:
            for peer in (old_mx, new_mx, bounce_mx):
                await peer.stop()
            vhost.delete()


@pytest.fixture(scope="module")
def delivered(
    broker_node: BrokerNode, loopback_net: str, dns: DnsServer, keys: Keys, tmp_path_factory: pytest.TempPathFactory
) -> Delivered:
    workdir = tmp_path_factory.mktemp("pipeline-8bit")
    return asyncio.run(_run_pipeline(broker_node, loopback_net, dns, keys, workdir))


def test_signed_8bit_mail_arrives_7bit_and_identical_at_both_servers(delivered: Delivered) -> None:
    old, new = delivered.old_signed, delivered.new_signed
    assert old.rcpt_tos == [OLD] and new.rcpt_tos == [NEW]
    assert old.content == new.content  # converted once, before signing: every server gets the signed bytes
    assert old.content.isascii()
    assert not any(option.upper().startswith("BODY=") for option in old.mail_options + new.mail_options)
    assert b"Content-Transfer-Encoding: quoted-printable\r\n\r\nGr=C3=BC=C3=9Fe aus K=C3=B6ln" in old.content
    assert decoded_parts(old.content) == decoded_parts(delivered.submitted)


def test_both_signatures_verify_as_delivered_to_the_server_without_8bitmime(
    delivered: Delivered, dns: DnsServer, tmp_path: Path
) -> None:
    content = delivered.old_signed.content
    tags = signature_tags(content)
    assert [(tag[b"a"], tag[b"s"]) for tag in tags] == [(b"rsa-sha256", b"rsa8"), (b"ed25519-sha256", b"pem8")]
    lookup = TxtLookup(dns.address, DNS_PORT)
    assert dkimpy_verdicts(content, lookup) == [True, True]
    assert sorted(lookup.queried) == [f"pem8._domainkey.{SIGNING_DOMAIN}", f"rsa8._domainkey.{SIGNING_DOMAIN}"]
    for index in (0, 1):
        alone = only_signature(content, index)
        assert opendkim_testmsg(alone, dns.address, tmp_path / str(index)) == (0, ""), index
    changed = content.replace(b"Gr=C3=BC=C3=9Fe aus", b"Gr=C3=BC=C3=9Fe AUS", 1)  # the body is covered
    assert changed != content
    for index in (0, 1):
        with pytest.raises(dkim.ValidationError, match="body hash mismatch"):
            dkim.DKIM(changed).verify(idx=index, dnsfunc=lookup)


def test_unsigned_8bit_mail_is_converted_by_the_worker(delivered: Delivered) -> None:
    content = delivered.old_unsigned.content
    assert signature_tags(content) == []
    assert content.isascii()
    assert b"Content-Transfer-Encoding: quoted-printable" in content
    assert [kind for kind, _ in decoded_parts(content)] == ["text/plain", "text/html"]
    assert decoded_parts(content)[0][1] == "Grüße aus Köln, schöne Straße.\r\n.a line with a leading dot".encode()


def test_mail_that_cannot_be_converted_bounces_5_6_3(delivered: Delivered) -> None:
    assert delivered.old_count == 2  # the non-MIME message never reached the server without 8BITMIME
    bounce = delivered.bounce
    assert bounce.mail_from == "" and bounce.rcpt_tos == [SENDER]
    report = email.message_from_bytes(bounce.content, policy=email.policy.compat32)
    assert report.get_content_type() == "multipart/report"
    [status] = [part for part in report.walk() if part.get_content_type() == "message/delivery-status"]
    fields = status.as_bytes()
    assert f"Final-Recipient: rfc822; {OLD}".encode() in fields
    assert b"Status: 5.6.3" in fields
    assert b"does not support 8BITMIME" in bounce.content
