"""The DSN as a sender and a bounce parser read it: every line of representative reports, exactly.

Each test builds a DSN and compares it, line by line, with the complete message kubemta
must write (the random multipart boundary read from the Content-Type and replaced by
BOUNDARY): the top-level header, the human-readable notification, the delivery-status
blocks and the original headers part.
"""

import re
from datetime import UTC, datetime, timedelta

import pytest

from kubemta_queue_manager.dsn import (
    Action,
    RecipientReport,
    Report,
    build_dsn,
    human_lines,
    human_text,
    original_headers,
)
from tests.harness.dsn_reader import read_dsn

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
ARRIVAL = NOW - timedelta(hours=2)
ORIGINAL = b"From: Alice <alice@example.com>\r\nSubject: Hello\r\n\r\nbody\r\n"
HOSTNAME = "mx.kubemta.test"

TOP = """\
From: Mail Delivery System <MAILER-DAEMON@mx.kubemta.test>
To: {to}
Subject: {subject}
Date: Mon, 02 Mar 2026 12:00:00 +0000
Message-ID: <QNEW@mx.kubemta.test>
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type={report_type}; boundary="BOUNDARY"

--BOUNDARY
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: {text_encoding}
Content-Description: Notification

This is the mail system at host mx.kubemta.test.

"""

FAILED_INTRO = """\
I'm sorry to have to inform you that your message could not
be delivered to one or more recipients. The headers of your
message are attached below.
"""

WARNING_INTRO = """\
####################################################################
# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #
####################################################################

"""

SIGNATURE = """
For further assistance, please send mail to the postmaster of
mx.kubemta.test and include this problem report.

                   The mail system

"""

PER_MESSAGE = """
--BOUNDARY
Content-Type: message/{report_type}
{report_encoding}Content-Description: Delivery report

Reporting-MTA: dns; mx.kubemta.test
X-Kubemta-Queue-ID: QORIG
Arrival-Date: Mon, 02 Mar 2026 10:00:00 +0000
"""

ORIGINAL_PART = """
--BOUNDARY
Content-Type: text/rfc822-headers; charset=utf-8
Content-Transfer-Encoding: 7bit
Content-Description: {title}

From: Alice <alice@example.com>
Subject: Hello

--BOUNDARY--
"""


def report(
    *entries: RecipientReport,
    sender: str = "alice@example.com",
    action: Action = Action.FAILED,
    arrival: datetime = ARRIVAL,
    will_retry_until: datetime | None = None,
    hostname: str = HOSTNAME,
    original: bytes = ORIGINAL,
) -> Report:
    return Report(
        hostname=hostname,
        queue_id="QORIG",
        sender=sender,
        arrival=arrival,
        last_attempt=NOW - timedelta(seconds=3),
        action=action,
        recipients=entries,
        original_content=original,
        will_retry_until=will_retry_until,
    )


def written(rep: Report, message_id: str = "<QNEW@mx.kubemta.test>") -> str:
    """The DSN as written (checked well formed by the strict reader), its boundary replaced by BOUNDARY."""
    raw = build_dsn(rep, message_id=message_id, now=NOW)
    read_dsn(raw)
    match = re.search(rb'boundary="(=_kubemta_[0-9a-f]{32})"', raw)
    assert match, "no kubemta boundary in the Content-Type"
    return raw.replace(match[1], b"BOUNDARY").decode("utf-8")


def crlf(text: str) -> str:
    return text.replace("\n", "\r\n")


def expected(
    *,
    intro: str,
    reasons: str,
    blocks: str,
    action: Action = Action.FAILED,
    to: str = "alice@example.com",
    report_type: str = "delivery-status",
    text_encoding: str = "7bit",
    report_encoding: str = "",
) -> str:
    delayed = action is Action.DELAYED
    subject = "Delayed Mail (still being retried)" if delayed else "Undelivered Mail Returned to Sender"
    title = "Delayed Message Headers" if delayed else "Undelivered Message Headers"
    return crlf(
        TOP.format(to=to, subject=subject, report_type=report_type, text_encoding=text_encoding)
        + intro
        + SIGNATURE
        + reasons
        + PER_MESSAGE.format(report_type=report_type, report_encoding=report_encoding)
        + blocks
        + ORIGINAL_PART.format(title=title)
    )


def test_a_failed_bounce_with_the_remote_mtas_reply_is_exactly_this_message() -> None:
    rep = report(RecipientReport("bob@example.org", "5.1.1", 550, "User unknown", "mx.example.org"))
    assert written(rep) == expected(
        intro=FAILED_INTRO,
        reasons="<bob@example.org>: host mx.example.org said: 550 5.1.1 User unknown\n",
        blocks="""
Final-Recipient: rfc822; bob@example.org
Action: failed
Status: 5.1.1
Remote-MTA: dns; mx.example.org
Diagnostic-Code: smtp; 550 5.1.1 User unknown
Last-Attempt-Date: Mon, 02 Mar 2026 11:59:57 +0000
""",
    )


def test_a_delay_warning_without_a_remote_mta_is_exactly_this_message() -> None:
    rep = report(
        RecipientReport("bob@example.org", "4.4.1", 0, "connection refused"),
        action=Action.DELAYED,
        will_retry_until=NOW + timedelta(days=3),
    )
    assert written(rep) == expected(
        action=Action.DELAYED,
        intro=WARNING_INTRO
        + "Your message could not be delivered for 2.0 hours.\n"
        + "It will be retried until it is 3.1 days old.\n",
        reasons="<bob@example.org>: connection refused\n",
        blocks="""
Final-Recipient: rfc822; bob@example.org
Action: delayed
Status: 4.4.1
Diagnostic-Code: X-kubemta; connection refused
Last-Attempt-Date: Mon, 02 Mar 2026 11:59:57 +0000
Will-Retry-Until: Thu, 05 Mar 2026 12:00:00 +0000
""",
    )


def test_an_expired_recipient_is_reported_as_expired_with_its_last_error() -> None:
    rep = report(
        RecipientReport(
            "bob@example.org", "4.4.7", 451, "Greylisted", "mx.example.org", expired=True, reply_status="4.7.1"
        )
    )
    assert written(rep) == expected(
        intro=FAILED_INTRO,
        reasons=(
            "<bob@example.org>: message expired in the queue; last error: "
            "host mx.example.org said: 451 4.7.1 Greylisted\n"
        ),
        blocks="""
Final-Recipient: rfc822; bob@example.org
Action: failed
Status: 4.4.7
Remote-MTA: dns; mx.example.org
Diagnostic-Code: smtp; 451 4.7.1 Greylisted
Last-Attempt-Date: Mon, 02 Mar 2026 11:59:57 +0000
""",
    )


def test_several_recipients_get_one_line_and_one_block_each_in_their_order() -> None:
    rep = report(
        RecipientReport("bob@example.org", "5.1.1", 550, "5.1.1 <bob@example.org>: User unknown", "mx.example.org"),
        RecipientReport("carol@example.org", "5.2.2", 552, "Mailbox\r\n  full"),
        RecipientReport("dave@example.net", "5.4.4", 0, ""),
        RecipientReport("erin@example.net", "not-a-status", 0, "no\tMX\nfor example.net", expired=True),
    )
    assert written(rep) == expected(
        intro=FAILED_INTRO,
        reasons="""\
<bob@example.org>: host mx.example.org said: 550 5.1.1 <bob@example.org>: User unknown
<carol@example.org>: 552 5.2.2 Mailbox full
<dave@example.net>: delivery failed with status 5.4.4
<erin@example.net>: message expired in the queue; last error: no MX for example.net
""",
        blocks="""
Final-Recipient: rfc822; bob@example.org
Action: failed
Status: 5.1.1
Remote-MTA: dns; mx.example.org
Diagnostic-Code: smtp; 550 5.1.1 <bob@example.org>: User unknown
Last-Attempt-Date: Mon, 02 Mar 2026 11:59:57 +0000

Final-Recipient: rfc822; carol@example.org
Action: failed
Status: 5.2.2
Diagnostic-Code: smtp; 552 5.2.2 Mailbox full
Last-Attempt-Date: Mon, 02 Mar 2026 11:59:57 +0000

Final-Recipient: rfc822; dave@example.net
Action: failed
Status: 5.4.4
Diagnostic-Code: X-kubemta; no further information
Last-Attempt-Date: Mon, 02 Mar 2026 11:59:57 +0000

Final-Recipient: rfc822; erin@example.net
Action: failed
Status: 5.0.0
Diagnostic-Code: X-kubemta; no MX for example.net
Last-Attempt-Date: Mon, 02 Mar 2026 11:59:57 +0000
""",
    )


def test_a_delay_warning_with_a_status_that_is_no_code_reports_4_0_0() -> None:
    rep = report(
        RecipientReport("bob@example.org", "4.x", 421, "Too busy", "mx.example.org"),
        action=Action.DELAYED,
        will_retry_until=NOW + timedelta(days=3),
    )
    text = written(rep)
    assert "\r\nStatus: 4.0.0\r\n" in text
    assert "\r\nDiagnostic-Code: smtp; 421 4.x Too busy\r\n" in text


def test_an_smtputf8_sender_and_a_utf8_recipient_get_a_global_delivery_status_in_8bit() -> None:
    rep = report(
        RecipientReport("jörg@exämple.org", "5.1.1", 550, "no", "mx.exämple.org"),
        sender="álvaro@exämple.com",
    )
    assert written(rep) == expected(
        to="álvaro@exämple.com",
        report_type="global-delivery-status",
        text_encoding="quoted-printable",
        report_encoding="Content-Transfer-Encoding: 8bit\n",
        intro=FAILED_INTRO,
        reasons="<j=C3=B6rg@ex=C3=A4mple.org>: host mx.ex=C3=A4mple.org said: 550 5.1.1 no\n",
        blocks="""
Final-Recipient: utf-8; jörg@exämple.org
Action: failed
Status: 5.1.1
Remote-MTA: dns; mx.ex\\x{E4}mple.org
Diagnostic-Code: smtp; 550 5.1.1 no
Last-Attempt-Date: Mon, 02 Mar 2026 11:59:57 +0000
""",
    )


def test_an_smtputf8_sender_with_only_ascii_recipients_gets_a_plain_delivery_status() -> None:
    rep = report(RecipientReport("bob@example.org", "5.1.1", 550, "no"), sender="álvaro@exämple.com")
    assert written(rep) == expected(
        to="álvaro@exämple.com",
        intro=FAILED_INTRO,
        reasons="<bob@example.org>: 550 5.1.1 no\n",
        blocks="""
Final-Recipient: rfc822; bob@example.org
Action: failed
Status: 5.1.1
Diagnostic-Code: smtp; 550 5.1.1 no
Last-Attempt-Date: Mon, 02 Mar 2026 11:59:57 +0000
""",
    )


def test_an_ascii_sender_gets_a_utf8_recipient_as_xtext_and_the_notification_quoted_printable() -> None:
    rep = report(RecipientReport("jörg@exämple.org", "5.1.1", 550, "no"))
    assert written(rep) == expected(
        intro=FAILED_INTRO,
        text_encoding="quoted-printable",
        reasons="<j=C3=B6rg@ex=C3=A4mple.org>: 550 5.1.1 no\n",
        blocks="""
Final-Recipient: utf-8; j\\x{F6}rg@ex\\x{E4}mple.org
Action: failed
Status: 5.1.1
Diagnostic-Code: smtp; 550 5.1.1 no
Last-Attempt-Date: Mon, 02 Mar 2026 11:59:57 +0000
""",
    )


def test_a_sender_that_is_no_address_gets_undisclosed_recipients() -> None:
    rep = report(RecipientReport("bob@example.org", "5.1.1", 550, "no"), sender="not an address")
    assert "\r\nTo: undisclosed-recipients:;\r\n" in written(rep)


@pytest.mark.parametrize(
    "message_id",
    ["QNEW@mx.kubemta.test", "<QNEW@mx.kubemta.test", "QNEW@mx.kubemta.test>", "<>", "<a b@c>", "<a\r\nB: c@d>"],
)
def test_a_message_id_that_is_no_msg_id_is_replaced_by_an_invalid_id_of_our_host(message_id: str) -> None:
    text = written(report(RecipientReport("bob@example.org", "5.1.1", 550, "no")), message_id=message_id)
    assert "\r\nMessage-ID: <invalid-id@mx.kubemta.test>\r\n" in text


def test_a_valid_message_id_is_written_as_given() -> None:
    text = written(report(RecipientReport("bob@example.org", "5.1.1", 550, "no")), message_id="<a.b-c@d.example>")
    assert "\r\nMessage-ID: <a.b-c@d.example>\r\n" in text


def test_a_host_name_that_is_no_domain_gives_a_from_and_a_message_id_of_localhost_invalid() -> None:
    rep = report(RecipientReport("bob@example.org", "5.1.1", 550, "no"), hostname="bad host")
    text = written(rep, message_id="<QNEW@bad host>")
    assert text.startswith("From: Mail Delivery System <MAILER-DAEMON@localhost.invalid>\r\n")
    assert "\r\nMessage-ID: <invalid-id@localhost.invalid>\r\n" in text


def test_a_failure_report_never_has_a_will_retry_until_field() -> None:
    rep = report(RecipientReport("bob@example.org", "5.1.1", 550, "no"), will_retry_until=NOW + timedelta(days=3))
    text = written(rep)
    assert "Will-Retry-Until" not in text
    assert "retried" not in text


def test_a_delay_warning_without_a_retry_limit_says_nothing_about_it() -> None:
    rep = report(RecipientReport("bob@example.org", "4.4.1", 0, "timeout"), action=Action.DELAYED)
    text = written(rep)
    assert "Will-Retry-Until" not in text
    assert "\r\nYour message could not be delivered for 2.0 hours.\r\n\r\nFor further assistance" in text


def test_the_headers_part_of_a_failure_is_titled_undelivered_and_of_a_delay_delayed() -> None:
    failed = written(report(RecipientReport("bob@example.org", "5.1.1", 550, "no")))
    delayed = written(report(RecipientReport("bob@example.org", "4.4.1", 0, "x"), action=Action.DELAYED))
    assert "Content-Description: Undelivered Message Headers\r\n" in failed
    assert "Delayed Message Headers" not in failed
    assert "Content-Description: Delayed Message Headers\r\n" in delayed
    assert "Undelivered Message Headers" not in delayed


@pytest.mark.parametrize(
    ("age", "wording"),
    [
        (timedelta(seconds=0), "0 seconds"),
        (timedelta(seconds=59), "59 seconds"),
        (timedelta(seconds=60), "1.0 minutes"),
        (timedelta(seconds=90), "1.5 minutes"),
        (timedelta(seconds=3599), "60.0 minutes"),
        (timedelta(seconds=3600), "1.0 hours"),
        (timedelta(hours=23, minutes=30), "23.5 hours"),
        (timedelta(seconds=86399), "24.0 hours"),
        (timedelta(seconds=86400), "1.0 days"),
        (timedelta(days=4, hours=12), "4.5 days"),
    ],
)
def test_the_age_of_a_delayed_message_is_worded_in_the_largest_unit_it_reaches(age: timedelta, wording: str) -> None:
    rep = report(RecipientReport("bob@example.org", "4.4.1", 0, "x"), action=Action.DELAYED, arrival=NOW - age)
    assert f"Your message could not be delivered for {wording}." in human_lines(rep, NOW)


@pytest.mark.parametrize(
    ("lifetime", "wording"),
    [
        (timedelta(seconds=45), "45 seconds"),
        (timedelta(seconds=60), "1.0 minutes"),
        (timedelta(seconds=3600), "1.0 hours"),
        (timedelta(seconds=86400), "1.0 days"),
        (timedelta(days=5), "5.0 days"),
    ],
)
def test_the_retry_limit_is_the_age_the_message_reaches_counted_from_its_arrival(
    lifetime: timedelta, wording: str
) -> None:
    arrival = NOW - timedelta(days=2)
    rep = report(
        RecipientReport("bob@example.org", "4.4.1", 0, "x"),
        action=Action.DELAYED,
        arrival=arrival,
        will_retry_until=arrival + lifetime,
    )
    lines = human_lines(rep, NOW)
    assert "Your message could not be delivered for 2.0 days." in lines
    assert f"It will be retried until it is {wording} old." in lines


def test_the_human_text_is_the_lines_each_ending_with_crlf() -> None:
    rep = report(RecipientReport("bob@example.org", "5.1.1", 550, "User unknown"))
    assert human_text(rep, NOW) == crlf(
        "This is the mail system at host mx.kubemta.test.\n\n"
        + FAILED_INTRO
        + SIGNATURE
        + "<bob@example.org>: 550 5.1.1 User unknown\n"
    )


def test_a_long_diagnostic_is_cut_at_800_characters_in_the_text_and_in_the_diagnostic_code() -> None:
    exact = "x" * (800 - len("smtp; 550 5.7.1 "))
    cut = exact + "y"
    text = written(
        report(
            RecipientReport("bob@example.org", "5.7.1", 550, exact),
            RecipientReport("carol@example.org", "5.7.1", 550, cut),
        )
    )
    assert f"\r\nDiagnostic-Code: smtp; 550 5.7.1 {exact}\r\n" in text
    assert f"\r\nDiagnostic-Code: smtp; 550 5.7.1 {exact[:-3]}...\r\n" in text

    prefix = "<bob@example.org>: "
    reason = "r" * (800 - len(prefix))
    lines = human_lines(report(RecipientReport("bob@example.org", "5.7.1", 0, reason)), NOW)
    assert lines[-1] == prefix + reason
    lines = human_lines(report(RecipientReport("bob@example.org", "5.7.1", 0, reason + "s")), NOW)
    assert lines[-1] == prefix + reason[:-3] + "..."


def test_a_long_reason_after_an_empty_address_is_cut_between_escapes() -> None:
    reason = "\x01" * 200
    lines = human_lines(report(RecipientReport("", "5.7.1", 0, reason)), NOW)
    assert lines[-1] == "<>: " + "\\x{01}" * 132 + "..."


def test_hostile_texts_in_the_human_lines_are_escaped_not_written() -> None:
    rep = report(
        RecipientReport("bob\r\nX: y@example.org", "5.1.1", 550, "no", "mx\r\n.example.org"),
        hostname="mx.kubemta.test\x00",
    )
    lines = human_lines(rep, NOW)
    assert lines[0] == "This is the mail system at host mx.kubemta.test\\x{00}."
    assert lines[-1] == "<bob\\x{0D}\\x{0A}X: y@example.org>: host mx .example.org said: 550 5.1.1 no"


def test_the_original_headers_are_the_block_before_the_first_empty_line() -> None:
    assert original_headers(b"A: 1\r\nB: 2\r\n\r\nbody\r\n\r\nmore") == "A: 1\nB: 2\n"
    assert original_headers(b"A: 1\nB: 2\n\nbody") == "A: 1\nB: 2\n"
    assert original_headers(b"A: 1\r\nB: 2") == "A: 1\nB: 2"
    assert original_headers(b"A: \xff\r\n\r\n") == "A: \ufffd\n"


def test_an_original_without_a_body_or_a_final_line_ending_is_returned_line_by_line() -> None:
    text = written(
        report(RecipientReport("bob@example.org", "5.1.1", 550, "no"), original=b"From: a@b\r\nSubject: no body")
    )
    assert text.endswith(
        "Content-Description: Undelivered Message Headers\r\n\r\nFrom: a@b\r\nSubject: no body\r\n\r\n--BOUNDARY--\r\n"
    )


def test_a_delay_warning_from_a_utf8_host_about_a_remote_mta_that_gave_no_reply() -> None:
    rep = Report(
        hostname="mx.exämple.test",
        queue_id="QORIG",
        sender="alice@example.com",
        arrival=ARRIVAL,
        last_attempt=NOW,
        action=Action.DELAYED,
        recipients=[RecipientReport("bob@example.org", "4.4.2", 0, "connection dropped", "mx.example.org")],
        original_content=b"A: b\r\n\r\n",
    )
    text = written(rep, message_id="<jörg@x>")
    head, _, rest = text.partition("\r\n\r\n--BOUNDARY\r\n")
    assert head.split("\r\n")[:5] == [
        "From: Mail Delivery System <MAILER-DAEMON@localhost.invalid>",
        "To: alice@example.com",
        "Subject: Delayed Mail (still being retried)",
        "Date: Mon, 02 Mar 2026 12:00:00 +0000",
        "Message-ID: <invalid-id@localhost.invalid>",
    ]
    assert rest.startswith(
        crlf(
            "Content-Type: text/plain; charset=utf-8\n"
            "Content-Transfer-Encoding: quoted-printable\n"
            "Content-Description: Notification\n\n"
            "This is the mail system at host mx.ex=C3=A4mple.test.\n\n"
            + WARNING_INTRO
            + "Your message could not be delivered for 2.0 hours.\n\n"
            "For further assistance, please send mail to the postmaster of\n"
            "mx.ex=C3=A4mple.test and include this problem report.\n\n"
            "                   The mail system\n\n"
            "<bob@example.org>: connection dropped\n\n"
        )
    )
    assert crlf("\nReporting-MTA: dns; mx.ex\\x{E4}mple.test\n") in rest
    assert (
        crlf(
            "\nFinal-Recipient: rfc822; bob@example.org\n"
            "Action: delayed\n"
            "Status: 4.4.2\n"
            "Remote-MTA: dns; mx.example.org\n"
            "Diagnostic-Code: X-kubemta; connection dropped\n"
            "Last-Attempt-Date: Mon, 02 Mar 2026 12:00:00 +0000\n\n"
        )
        in rest
    )


def test_a_recipient_report_of_only_an_address_and_a_status_says_so() -> None:
    rep = report(RecipientReport("bob@example.org", "5.4.4"), RecipientReport("carol@example.org", "5.1.1", 550))
    text = written(rep)
    assert human_lines(rep, NOW)[-2:] == [
        "<bob@example.org>: delivery failed with status 5.4.4",
        "<carol@example.org>: 550 5.1.1",
    ]
    assert (
        crlf(
            "\nFinal-Recipient: rfc822; bob@example.org\n"
            "Action: failed\n"
            "Status: 5.4.4\n"
            "Diagnostic-Code: X-kubemta; no further information\n"
            "Last-Attempt-Date: Mon, 02 Mar 2026 11:59:57 +0000\n\n"
            "Final-Recipient: rfc822; carol@example.org\n"
            "Action: failed\n"
            "Status: 5.1.1\n"
            "Diagnostic-Code: smtp; 550 5.1.1\n"
            "Last-Attempt-Date: Mon, 02 Mar 2026 11:59:57 +0000\n\n"
        )
        in text
    )


def test_a_report_without_a_retry_limit_by_default() -> None:
    rep = Report(
        hostname=HOSTNAME,
        queue_id="QORIG",
        sender="alice@example.com",
        arrival=ARRIVAL,
        last_attempt=NOW,
        action=Action.DELAYED,
        recipients=[RecipientReport("bob@example.org", "4.4.1")],
        original_content=ORIGINAL,
    )
    assert rep.will_retry_until is None
    assert "Will-Retry-Until" not in written(rep)


@pytest.mark.parametrize("message_id", ["<a@x.>", "<jörg@x>", "<a@[192.0.2.1>", '<"a b"@x>'])
def test_a_message_id_whose_inside_is_no_plain_ascii_addr_spec_is_replaced(message_id: str) -> None:
    text = written(report(RecipientReport("bob@example.org", "5.1.1", 550, "no")), message_id=message_id)
    assert "\r\nMessage-ID: <invalid-id@mx.kubemta.test>\r\n" in text


@pytest.mark.parametrize("message_id", ["<a@[192.0.2.1]>", "<QNEW.1+x@mx.kubemta.test>", "<a@b>"])
def test_a_message_id_of_a_plain_addr_spec_in_angle_brackets_is_kept(message_id: str) -> None:
    text = written(report(RecipientReport("bob@example.org", "5.1.1", 550, "no")), message_id=message_id)
    assert f"\r\nMessage-ID: {message_id}\r\n" in text


def test_an_original_that_starts_with_an_empty_line_has_an_empty_header_block() -> None:
    assert original_headers(b"\r\n\r\nbody") == "\n"
    assert original_headers(b"\n\nbody") == "\n"


def test_a_long_escaped_address_is_cut_between_escapes_at_800_characters() -> None:
    lines = human_lines(report(RecipientReport("\x01" * 200, "5.1.1", 550, "no")), NOW)
    assert lines[-1] == "<" + "\\x{01}" * 132 + "..."


def test_the_human_text_of_a_delay_warning_counts_the_age_up_to_now() -> None:
    rep = report(
        RecipientReport("bob@example.org", "4.4.1", 0, "timeout"),
        action=Action.DELAYED,
        will_retry_until=ARRIVAL + timedelta(days=5),
    )
    assert human_text(rep, NOW) == crlf(
        "This is the mail system at host mx.kubemta.test.\n\n"
        + WARNING_INTRO
        + "Your message could not be delivered for 2.0 hours.\n"
        + "It will be retried until it is 5.0 days old.\n"
        + SIGNATURE
        + "<bob@example.org>: timeout\n"
    )
    assert "Your message could not be delivered for 3.0 hours." in human_text(rep, NOW + timedelta(hours=1))
