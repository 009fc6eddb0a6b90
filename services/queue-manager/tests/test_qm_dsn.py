"""The RFC 3464 DSN: structure, fields and encoding, read back with the stdlib parser."""

import email
import email.policy
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import cast

from kubemta.v1 import message_pb2
from kubemta_common.amqp.topology import DSN
from kubemta_queue_manager.dsn import (
    Action,
    RecipientReport,
    Report,
    build_dsn,
    diagnostic_code,
    final_recipient,
    original_headers,
    xtext_address,
)

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
ARRIVAL = NOW - timedelta(hours=2)


def report(*entries: RecipientReport, sender: str = "alice@example.com", action: Action = Action.FAILED) -> Report:
    return Report(
        hostname="mx.kubemta.test",
        queue_id="QORIG",
        sender=sender,
        arrival=ARRIVAL,
        last_attempt=NOW - timedelta(seconds=3),
        action=action,
        recipients=entries,
        original_content=b"From: Alice <alice@example.com>\r\nSubject: Hello\r\n\r\nbody line\r\n",
        will_retry_until=ARRIVAL + timedelta(days=5) if action is Action.DELAYED else None,
    )


def parse(raw: bytes) -> EmailMessage:
    return email.message_from_bytes(raw, policy=email.policy.default)


def parts(raw: bytes) -> list[EmailMessage]:
    return list(cast(list[EmailMessage], parse(raw).iter_parts()))


async def test_bounce_from_handler_is_a_complete_rfc3464_report(kit, manager, publisher) -> None:
    job = kit.job(["bob@example.org"])
    await manager.handle_result(kit.result(job, [kit.bounced("bob@example.org")]))
    ((key, _, _, _),) = publisher.published
    assert key == DSN  # a request: the dsn stage builds and sends the DSN (kit.dsns does what it does)
    (dsn,) = kit.dsns(publisher)
    raw = dsn.content

    message = parse(raw)
    assert message.get_content_type() == "multipart/report"
    assert message.get_param("report-type") == "delivery-status"
    assert message["From"] == f"Mail Delivery System <MAILER-DAEMON@{kit.HOSTNAME}>"
    assert message["Auto-Submitted"] == "auto-replied"
    assert message["MIME-Version"] == "1.0"
    assert message["Date"].datetime == kit.NOW
    text, status, headers = parts(raw)
    assert [p.get_content_type() for p in (text, status, headers)] == [
        "text/plain",
        "message/delivery-status",
        "text/rfc822-headers",
    ]
    assert "<bob@example.org>: host mx1.example.org said: 550 5.1.1" in text.get_content()

    per_message, per_recipient = cast(list[EmailMessage], status.get_payload())
    assert per_message["Reporting-MTA"] == f"dns; {kit.HOSTNAME}"
    assert per_message["X-Kubemta-Queue-ID"] == "QID1"
    assert email.utils.parsedate_to_datetime(per_message["Arrival-Date"]) == kit.NOW - timedelta(minutes=10)
    assert per_recipient["Final-Recipient"] == "rfc822; bob@example.org"
    assert per_recipient["Action"] == "failed"
    assert per_recipient["Status"] == "5.1.1"
    assert per_recipient["Remote-MTA"] == "dns; mx1.example.org"
    assert per_recipient["Diagnostic-Code"] == (
        "smtp; 550 5.1.1 <bob@example.org>: Recipient address rejected: User unknown"
    )
    assert email.utils.parsedate_to_datetime(per_recipient["Last-Attempt-Date"]) == kit.NOW - timedelta(seconds=5)

    original = headers.get_content()
    assert "Subject: Quarterly report" in original
    assert "Message-ID: <original-1@example.com>" in original
    assert "the report." not in original, "only the header block is returned"


def test_crlf_line_endings_only() -> None:
    raw = build_dsn(
        report(RecipientReport("bob@example.org", "5.1.1", 550, "User unknown")), message_id="<a@b>", now=NOW
    )
    assert b"\r\n" in raw
    assert b"\n" not in raw.replace(b"\r\n", b"")
    assert b"\r" not in raw.replace(b"\r\n", b"")


def test_one_block_per_recipient_and_no_mime_version_on_parts() -> None:
    raw = build_dsn(
        report(
            RecipientReport("bob@example.org", "5.1.1", 550, "User unknown", "mx.example.org"),
            RecipientReport("carol@example.org", "5.2.2", 552, "5.2.2 Mailbox full", "mx.example.org"),
        ),
        message_id="<a@b>",
        now=NOW,
    )
    status = parts(raw)[1]
    blocks = cast(list[EmailMessage], status.get_payload())
    assert len(blocks) == 3
    assert [b["Diagnostic-Code"] for b in blocks[1:]] == [
        "smtp; 550 5.1.1 User unknown",
        "smtp; 552 5.2.2 Mailbox full",
    ]
    assert all(part["MIME-Version"] is None for part in parts(raw))


def test_delay_warning_fields() -> None:
    raw = build_dsn(
        report(RecipientReport("bob@example.org", "4.2.0", 451, "Try later", "mx.example.org"), action=Action.DELAYED),
        message_id="<a@b>",
        now=NOW,
    )
    message = parse(raw)
    assert message["Subject"] == "Delayed Mail (still being retried)"
    text, status, headers = parts(raw)
    block = cast(list[EmailMessage], status.get_payload())[1]
    assert block["Action"] == "delayed"
    assert block["Status"] == "4.2.0"
    assert email.utils.parsedate_to_datetime(block["Will-Retry-Until"]) == ARRIVAL + timedelta(days=5)
    assert "THIS IS A WARNING ONLY" in text.get_content()
    assert "2.0 hours" in text.get_content()
    assert headers["Content-Description"] == "Delayed Message Headers"


def test_diagnostic_without_smtp_reply_uses_x_kubemta() -> None:
    entry = RecipientReport("bob@nx.example", "5.1.2", 0, "domain nx.example does not exist")
    assert diagnostic_code(entry) == "X-kubemta; domain nx.example does not exist"
    assert diagnostic_code(RecipientReport("b@x", "4.4.1", 0, "")) == "X-kubemta; no further information"


def test_diagnostic_does_not_repeat_codes_and_stays_on_one_line() -> None:
    assert diagnostic_code(RecipientReport("b@x", "5.1.1", 550, "550 5.1.1 No such user")) == (
        "smtp; 550 5.1.1 No such user"
    )
    assert diagnostic_code(RecipientReport("b@x", "5.7.1", 554, "Rejected\r\nby policy")) == (
        "smtp; 554 5.7.1 Rejected by policy"
    )


def test_non_ascii_recipient_uses_the_utf8_address_type() -> None:
    assert final_recipient("bob@example.org") == "rfc822; bob@example.org"
    assert final_recipient("jörg@exämple.org") == "utf-8; j\\x{F6}rg@ex\\x{E4}mple.org"
    assert xtext_address("a+b=c@x") == "a\\x{2B}b\\x{3D}c@x"
    raw = build_dsn(report(RecipientReport("jörg@exämple.org", "5.1.1", 550, "no")), message_id="<a@b>", now=NOW)
    assert raw.isascii(), "an ASCII sender gets a 7-bit DSN"
    text = parts(raw)[0].get_content()
    assert "<jörg@exämple.org>" in text


def test_non_ascii_sender_gets_a_utf8_to_header() -> None:
    raw = build_dsn(
        report(RecipientReport("bob@example.org", "5.1.1", 550, "no"), sender="álvaro@exämple.com"),
        message_id="<a@b>",
        now=NOW,
    )
    assert "To: álvaro@exämple.com".encode() in raw
    assert parse(raw)["To"] == "álvaro@exämple.com"


def test_original_headers_stop_at_the_blank_line() -> None:
    assert original_headers(b"A: 1\r\nB: 2\r\n\r\nbody\r\n\r\nmore") == "A: 1\nB: 2\n"
    assert original_headers(b"A: 1\r\nB: 2\r\n") == "A: 1\nB: 2\n"


async def test_missing_status_is_derived(kit, manager, publisher) -> None:
    job = kit.job(["bob@example.org"])
    result = kit.result(
        job,
        [
            message_pb2.RecipientResult(
                recipient="bob@example.org", outcome=message_pb2.OUTCOME_PERMANENT, diagnostic="no route"
            )
        ],
    )
    await manager.handle_result(result)
    (dsn,) = kit.dsns(publisher)
    status = parts(dsn.content)[1]
    block = cast(list[EmailMessage], status.get_payload())[1]
    assert block["Status"] == "5.0.0"
    assert block["Remote-MTA"] is None
    assert block["Diagnostic-Code"] == "X-kubemta; no route"


def test_expired_recipient_keeps_the_replys_own_status_in_the_diagnostic() -> None:
    entry = RecipientReport(
        "b@x", "4.4.7", 451, "Greylisted, come back later", "mx.x", expired=True, reply_status="4.7.1"
    )
    assert diagnostic_code(entry) == "smtp; 451 4.7.1 Greylisted, come back later"


def test_long_diagnostics_stay_within_the_line_limit_and_read_back_whole() -> None:
    long_reply = "5.7.1 " + " ".join(["policy"] * 400)
    raw = build_dsn(
        report(
            RecipientReport("bob@example.org", "5.7.1", 550, long_reply, "mx.example.org"),
            RecipientReport("carol@example.org", "5.1.1", 550, "5.1.1 <carol@example.org>: Recipient unknown"),
        ),
        message_id="<a@b>",
        now=NOW,
    )
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998
    blocks = cast(list[EmailMessage], parts(raw)[1].get_payload())
    assert blocks[1]["Diagnostic-Code"].startswith("smtp; 550 5.7.1 policy policy")
    assert blocks[1]["Diagnostic-Code"].endswith("...")
    assert blocks[2]["Diagnostic-Code"] == "smtp; 550 5.1.1 <carol@example.org>: Recipient unknown"
