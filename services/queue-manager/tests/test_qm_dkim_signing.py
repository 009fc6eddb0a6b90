"""DKIM signing: keys made by the CLI sign, dkimpy and OpenDKIM verify against the records it printed."""

import logging
import re
from collections.abc import Callable
from pathlib import Path

import dkim  # type: ignore[import-untyped]
import pytest

from kubemta.v1 import message_pb2
from kubemta_common.amqp.topology import ROUTE
from kubemta_common.mime_7bit import to_7bit
from kubemta_mail_auth.dkim.keys import KeyStore
from kubemta_queue_manager import metrics
from kubemta_queue_manager.dkim_signer import DkimSigner, Outcome, SignResult, include_headers
from kubemta_queue_manager.handlers import QueueManager
from tests.harness.fake_events import RecordingEvents

MESSAGE = (
    b"Received: from client.example.com (client.example.com [192.0.2.1])\r\n"
    b"\tby mx.kubemta.test with ESMTP id ABC123\r\n"
    b"From: Alice <alice@example.com>\r\n"
    b"To: Bob <bob@example.org>\r\n"
    b"Subject: Quarterly report\r\n"
    b"Date: Mon, 02 Mar 2026 12:00:00 +0000\r\n"
    b"Message-ID: <original-1@example.com>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"Hello Bob,\r\nthe report.\r\n"
)


def signatures(message: bytes) -> list[dict[bytes, bytes]]:
    """The tags of each DKIM-Signature, topmost first."""
    parsed = dkim.DKIM(message)
    return [dkim.util.parse_tag_value(value) for name, value in parsed.headers if name.lower() == b"dkim-signature"]


def verify_all(message: bytes, zone) -> list[bool]:
    """dkimpy's verdict on each DKIM-Signature, topmost first (a DKIMException counts as a failure)."""
    results = []
    for index in range(len(signatures(message))):
        try:
            results.append(bool(dkim.DKIM(message).verify(idx=index, dnsfunc=zone.dnsfunc)))
        except dkim.DKIMException:
            results.append(False)
    return results


def signer_for(zone) -> DkimSigner:
    return DkimSigner(KeyStore(zone.keys_dir))


@pytest.mark.parametrize("algorithm", ["rsa", "ed25519"])
def test_signature_verifies_with_dkimpy(dkim_zone, algorithm: str) -> None:
    dkim_zone.generate("example.com", "s1", algorithm)
    result = signer_for(dkim_zone).sign(MESSAGE)
    assert result.outcome is Outcome.SIGNED
    assert result.content.endswith(MESSAGE)
    assert result.content.startswith(b"DKIM-Signature:")
    assert dkim.verify(result.content, dnsfunc=dkim_zone.dnsfunc)
    (tags,) = signatures(result.content)
    assert tags[b"a"] == (b"rsa-sha256" if algorithm == "rsa" else b"ed25519-sha256")
    assert tags[b"c"] == b"relaxed/relaxed"
    assert tags[b"d"] == b"example.com" and tags[b"s"] == b"s1"
    assert b"l" not in tags


@pytest.mark.parametrize("algorithm", ["rsa", "ed25519"])
def test_signature_verifies_with_opendkim(dkim_zone, tmp_path: Path, algorithm: str) -> None:
    dkim_zone.generate("example.com", "s1", algorithm)
    signed = signer_for(dkim_zone).sign(MESSAGE).content
    assert dkim_zone.opendkim_testmsg(signed, tmp_path / "ok") == (0, "")
    tampered = signed.replace(b"Subject: Quarterly report", b"Subject: Quarterly REPORT")
    status, stderr = dkim_zone.opendkim_testmsg(tampered, tmp_path / "tampered")
    assert status != 0 and "Bad signature" in stderr


def test_opendkim_really_reads_the_test_zone(dkim_zone, tmp_path: Path) -> None:
    dkim_zone.generate("example.com", "s1", "ed25519")
    signed = signer_for(dkim_zone).sign(MESSAGE).content
    dkim_zone.records.clear()
    status, stderr = dkim_zone.opendkim_testmsg(signed, tmp_path)
    assert status != 0 and "Key retrieval failed" in stderr


def test_rsa_and_ed25519_both_sign_and_both_verify(dkim_zone, tmp_path: Path) -> None:
    dkim_zone.generate("example.com", "ed", "ed25519")
    dkim_zone.generate("example.com", "rsa", "rsa")
    signed = signer_for(dkim_zone).sign(MESSAGE).content
    assert [tags[b"a"] for tags in signatures(signed)] == [b"rsa-sha256", b"ed25519-sha256"]
    assert verify_all(signed, dkim_zone) == [True, True]
    assert dkim_zone.opendkim_testmsg(signed, tmp_path) == (0, "")


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda m: m.replace(b"To: Bob <bob@example.org>", b"To: Eve <eve@example.net>"), id="to-changed"),
        pytest.param(lambda m: m.replace(b"Date: Mon, 02 Mar", b"Date: Tue, 03 Mar"), id="date-changed"),
        pytest.param(lambda m: b"Subject: Urgent: pay now\r\n" + m, id="subject-prepended"),
        pytest.param(lambda m: b"From: ceo@example.com\r\n" + m, id="from-prepended"),
        pytest.param(lambda m: b"Content-Type: text/html\r\n" + m, id="content-type-prepended"),
        pytest.param(lambda m: m.replace(b"the report.", b"the other report."), id="body-changed"),
    ],
)
def test_signature_breaks_when_signed_content_changes(dkim_zone, tamper: Callable[[bytes], bytes]) -> None:
    dkim_zone.generate("example.com", "ed", "ed25519")
    dkim_zone.generate("example.com", "rsa", "rsa")
    signed = signer_for(dkim_zone).sign(MESSAGE).content
    assert verify_all(tamper(signed), dkim_zone) == [False, False]


def test_an_unsigned_header_may_be_added(dkim_zone) -> None:
    dkim_zone.generate("example.com", "ed", "ed25519")
    signed = signer_for(dkim_zone).sign(MESSAGE).content
    assert verify_all(b"Received: from relay.example.net\r\n" + signed, dkim_zone) == [True]


def test_signed_header_list_oversigns_the_key_headers() -> None:
    names = [b"Received", b"From", b"To", b"Cc", b"Subject", b"Reply-To", b"Content-Type", b"X-Mailer"]
    assert include_headers(names) == [
        b"from",
        b"from",
        b"to",
        b"to",
        b"cc",
        b"subject",
        b"subject",
        b"date",
        b"message-id",
        b"reply-to",
        b"mime-version",
        b"content-type",
        b"content-type",
        b"content-transfer-encoding",
    ]


def test_the_signature_lists_the_oversigned_headers(dkim_zone) -> None:
    dkim_zone.generate("example.com", "ed", "ed25519")
    (tags,) = signatures(signer_for(dkim_zone).sign(MESSAGE).content)
    signed = re.split(rb"\s*:\s*", tags[b"h"])
    assert signed.count(b"from") == 2 and signed.count(b"subject") == 2 and signed.count(b"to") == 2
    assert signed.count(b"content-transfer-encoding") == 1
    assert b"received" not in signed and b"cc" not in signed


def test_a_subdomain_is_signed_with_its_parents_key(dkim_zone) -> None:
    dkim_zone.generate("example.com", "ed", "ed25519")
    message = MESSAGE.replace(b"alice@example.com", b"alice@News.Mail.Example.com")
    result = signer_for(dkim_zone).sign(message)
    assert result.domain == "example.com"
    (tags,) = signatures(result.content)
    assert tags[b"d"] == b"example.com"
    assert verify_all(result.content, dkim_zone) == [True]


def test_the_closest_parent_wins(dkim_zone) -> None:
    dkim_zone.generate("example.com", "ed", "ed25519")
    dkim_zone.generate("mail.example.com", "ed", "ed25519")
    message = MESSAGE.replace(b"alice@example.com", b"alice@news.mail.example.com")
    (tags,) = signatures(signer_for(dkim_zone).sign(message).content)
    assert tags[b"d"] == b"mail.example.com"


@pytest.mark.parametrize(
    "message",
    [
        pytest.param(MESSAGE.replace(b"From: Alice <alice@example.com>\r\n", b""), id="no-from"),
        pytest.param(MESSAGE.replace(b"<alice@example.com>", b"<alice@example.com>, bob@example.com"), id="two"),
        pytest.param(MESSAGE.replace(b"<alice@example.com>", b"<alice>"), id="no-domain"),
    ],
)
def test_messages_without_a_usable_from_pass_unsigned(dkim_zone, message: bytes) -> None:
    dkim_zone.generate("example.com", "ed", "ed25519")
    result = signer_for(dkim_zone).sign(message)
    assert result.outcome is Outcome.NO_FROM
    assert result.content == message


def test_a_domain_without_keys_passes_unsigned(dkim_zone) -> None:
    dkim_zone.generate("example.org", "ed", "ed25519")
    result = signer_for(dkim_zone).sign(MESSAGE)
    assert result.outcome is Outcome.NO_KEY
    assert result.content == MESSAGE


# --- the key store -----------------------------------------------------------


def test_a_bad_key_file_is_logged_and_skipped(dkim_zone, caplog: pytest.LogCaptureFixture) -> None:
    dkim_zone.generate("example.com", "good", "ed25519")
    (dkim_zone.keys_dir / "example.com" / "bad.key").write_text("not a key\n")
    (dkim_zone.keys_dir / "example.com" / "short.key").write_text("c2hvcnQ=\n")
    (dkim_zone.keys_dir / "example.com" / "broken-pem.key").write_text(
        "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n"
    )
    (dkim_zone.keys_dir / "example.com" / "README").write_text("ignored: not a .key file\n")
    with caplog.at_level(logging.ERROR):
        store = KeyStore(dkim_zone.keys_dir)
    assert [key.selector for key in store.keys_for("example.com")] == ["good"]
    skipped = sorted(record.getMessage().split(":")[0] for record in caplog.records)
    assert len(skipped) == 3 and all("skipping DKIM key" in text for text in skipped)


def test_pub_files_beside_the_keys_change_nothing_for_signing(
    dkim_zone, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    dkim_zone.generate("example.com", "one", "ed25519")
    dkim_zone.generate("example.com", "two", "rsa")
    domain_dir = dkim_zone.keys_dir / "example.com"
    assert sorted(path.name for path in domain_dir.iterdir()) == ["one.key", "one.pub", "two.key", "two.pub"]
    without_pub = tmp_path / "without-pub" / "example.com"
    without_pub.mkdir(parents=True)
    for name in ("one.key", "two.key"):
        (without_pub / name).write_bytes((domain_dir / name).read_bytes())
    (domain_dir / "lone.pub").write_text((domain_dir / "one.pub").read_text())  # a public key without its key
    (domain_dir / "bad.pub").write_text("not a record\n")
    (dkim_zone.keys_dir / "example.org").mkdir()
    (dkim_zone.keys_dir / "example.org" / "e1.pub").write_text((domain_dir / "one.pub").read_text())
    with caplog.at_level(logging.ERROR):
        store = KeyStore(dkim_zone.keys_dir)
    assert store.keys_for("example.com") == KeyStore(without_pub.parent).keys_for("example.com")
    assert [key.selector for key in store.keys_for("example.com")] == ["one", "two"]
    assert store.signing_keys("example.org") == []  # no key: example.org is not signed
    # .pub files are not even read: no "skipping DKIM key" error. Only errors count: the second store's INFO line
    # reaches caplog when an earlier test in the same process left the logger at INFO (it failed so in CI order).
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]


def test_keys_are_reloaded_when_the_directory_changes(dkim_zone) -> None:
    now = [0.0]
    dkim_zone.generate("example.com", "one", "ed25519")
    store = KeyStore(dkim_zone.keys_dir, check_interval=5.0, clock=lambda: now[0])
    assert [key.selector for key in store.keys_for("example.com")] == ["one"]
    dkim_zone.generate("example.com", "two", "ed25519")
    dkim_zone.generate("example.org", "one", "ed25519")
    now[0] = 4.0
    assert [key.selector for key in store.keys_for("example.com")] == ["one"]  # not checked yet
    now[0] = 9.5
    assert [key.selector for key in store.keys_for("example.com")] == ["one", "two"]
    assert [key.selector for key in store.keys_for("EXAMPLE.org.")] == ["one"]
    (dkim_zone.keys_dir / "example.com" / "one.key").unlink()
    now[0] = 20.0
    assert [key.selector for key in store.keys_for("example.com")] == ["two"]


def test_a_missing_directory_means_no_keys(tmp_path: Path) -> None:
    assert KeyStore(tmp_path / "absent").signing_keys("example.com") == []


# --- the queue-manager -------------------------------------------------------


def accepted(content: bytes, recipients: list[str]) -> message_pb2.AcceptedMessage:
    """A message from a trusted client (a relay network): the only kind, with DSNs, that is signed."""
    message = message_pb2.AcceptedMessage(
        queue_id="QID9",
        sender="alice@example.com",
        recipients=recipients,
        content=content,
        trust=message_pb2.TRUST_RELAY_NETWORK,
    )
    return message


def sample(**labels: str) -> float:
    value = metrics.DKIM_SIGNATURES.labels(**labels)._value.get()
    return float(value)


async def test_handle_accepted_signs_once_before_splitting(dkim_zone, publisher, kit) -> None:
    dkim_zone.generate("example.com", "ed", "ed25519")
    dkim_zone.generate("example.com", "rsa", "rsa")
    manager = QueueManager(kit.settings(), publisher, events=RecordingEvents(), signer=signer_for(dkim_zone))
    before = sample(algorithm="rsa-sha256", result="signed")
    await manager.handle_accepted(accepted(MESSAGE, ["bob@example.org", "carol@example.net"]))
    jobs = [message_pb2.DeliveryJob.FromString(body) for _, body, _, _ in publisher.to(ROUTE)]
    assert len(jobs) == 2
    assert jobs[0].content == jobs[1].content
    assert jobs[0].content.endswith(MESSAGE)
    assert verify_all(jobs[0].content, dkim_zone) == [True, True]
    assert sample(algorithm="rsa-sha256", result="signed") == before + 1


async def test_a_signing_failure_sends_the_message_unsigned(publisher, kit, caplog: pytest.LogCaptureFixture) -> None:
    class Broken(DkimSigner):
        def __init__(self) -> None:
            pass

        def sign(self, content: bytes) -> SignResult:
            raise RuntimeError("key vanished")

    manager = QueueManager(kit.settings(), publisher, events=RecordingEvents(), signer=Broken())
    with caplog.at_level(logging.ERROR):
        await manager.handle_accepted(accepted(MESSAGE, ["bob@example.org"]))
    (job,) = [message_pb2.DeliveryJob.FromString(body) for _, body, _, _ in publisher.to(ROUTE)]
    assert job.content == MESSAGE
    assert "DKIM signing failed" in caplog.text


async def test_without_a_signer_nothing_changes(publisher, manager) -> None:
    await manager.handle_accepted(accepted(MESSAGE, ["bob@example.org"]))
    (job,) = [message_pb2.DeliveryJob.FromString(body) for _, body, _, _ in publisher.to(ROUTE)]
    assert job.content == MESSAGE


async def test_a_bounce_is_signed_for_the_hostnames_domain(dkim_zone, publisher, kit, tmp_path: Path) -> None:
    dkim_zone.generate("kubemta.test", "bounces", "rsa")
    manager = QueueManager(
        kit.settings(), publisher, events=RecordingEvents(), clock=lambda: kit.NOW, signer=signer_for(dkim_zone)
    )
    job = kit.job(["bob@example.org"])
    await manager.handle_result(kit.result(job, [kit.bounced("bob@example.org")]))
    (dsn,) = kit.dsns(publisher)
    assert dsn.generated
    await manager.handle_accepted(dsn)
    (bounce_job,) = [message_pb2.DeliveryJob.FromString(body) for _, body, _, _ in publisher.to(ROUTE)]
    (tags,) = signatures(bounce_job.content)
    assert tags[b"d"] == b"kubemta.test" and tags[b"s"] == b"bounces"
    assert b"MAILER-DAEMON@mx.kubemta.test" in bounce_job.content
    assert verify_all(bounce_job.content, dkim_zone) == [True]
    assert dkim_zone.opendkim_testmsg(bounce_job.content, tmp_path) == (0, "")


# --- 8-bit content: made 7-bit before signing (RFC 6376 section 5.3) ---------------------------

EIGHT_BIT = (
    b"From: Alice <alice@example.com>\r\n"
    b"To: Bob <bob@example.org>\r\n"
    b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n"
    b"Date: Mon, 02 Mar 2026 12:00:00 +0000\r\n"
    b"Message-ID: <eight-bit-1@example.com>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n"
    b"\r\n"
    b"Gr\xc3\xbc\xc3\x9fe aus K\xc3\xb6ln.\r\n"
)


def test_8bit_mime_content_is_signed_as_7bit_and_verifies(dkim_zone, tmp_path: Path) -> None:
    dkim_zone.generate("example.com", "ed", "ed25519")
    dkim_zone.generate("example.com", "rsa", "rsa")
    result = signer_for(dkim_zone).sign(EIGHT_BIT)
    assert result.outcome is Outcome.SIGNED and result.converted
    assert result.content.isascii()
    signed_part = EIGHT_BIT.replace(b"Encoding: 8bit", b"Encoding: quoted-printable").replace(
        b"Gr\xc3\xbc\xc3\x9fe aus K\xc3\xb6ln.", b"Gr=C3=BC=C3=9Fe aus K=C3=B6ln."
    )
    assert result.content.endswith(signed_part)
    assert verify_all(result.content, dkim_zone) == [True, True]
    assert dkim_zone.opendkim_testmsg(result.content, tmp_path) == (0, "")
    # a server without 8BITMIME gets exactly this: the worker's converter has nothing left to do
    assert to_7bit(result.content) is result.content


def test_a_conversion_that_adds_the_encoding_field_is_signed_and_oversigned(dkim_zone) -> None:
    dkim_zone.generate("example.com", "ed", "ed25519")
    message = EIGHT_BIT.replace(b"Content-Transfer-Encoding: 8bit\r\n", b"")
    result = signer_for(dkim_zone).sign(message)
    assert b"Content-Transfer-Encoding: quoted-printable\r\n\r\nGr=C3=BC" in result.content
    (tags,) = signatures(result.content)
    assert re.split(rb"\s*:\s*", tags[b"h"]).count(b"content-transfer-encoding") == 2  # present once, plus one
    assert verify_all(result.content, dkim_zone) == [True]
    prepended = b"Content-Transfer-Encoding: 8bit\r\n" + result.content
    assert verify_all(prepended, dkim_zone) == [False]


def test_8bit_content_that_cannot_be_converted_is_signed_as_it_is(dkim_zone) -> None:
    dkim_zone.generate("example.com", "ed", "ed25519")
    raw = MESSAGE.replace(b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n", b"")
    raw = raw.replace(b"the report.", b"der Bericht f\xc3\xbcr dich.")  # 8-bit, and no MIME header field
    result = signer_for(dkim_zone).sign(raw)
    assert result.outcome is Outcome.SIGNED and not result.converted
    assert result.content.endswith(raw)
    assert verify_all(result.content, dkim_zone) == [True]


def test_8bit_header_fields_stay_and_the_body_is_converted(dkim_zone) -> None:
    dkim_zone.generate("example.com", "ed", "ed25519")
    message = EIGHT_BIT.replace(b"To: Bob <", b"To: B\xc3\xb6b <")  # UTF-8 in a header: SMTPUTF8 mail
    result = signer_for(dkim_zone).sign(message)
    assert result.converted
    assert b"To: B\xc3\xb6b <bob@example.org>\r\n" in result.content
    assert result.content.split(b"\r\n\r\n", 1)[1] == b"Gr=C3=BC=C3=9Fe aus K=C3=B6ln.\r\n"
    assert verify_all(result.content, dkim_zone) == [True]


def test_unsigned_8bit_mail_is_not_converted(dkim_zone) -> None:
    dkim_zone.generate("example.org", "ed", "ed25519")
    result = signer_for(dkim_zone).sign(EIGHT_BIT)
    assert result.outcome is Outcome.NO_KEY and not result.converted
    assert result.content == EIGHT_BIT
