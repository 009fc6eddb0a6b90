"""Missing Date: and Message-ID: are added to trusted mail only (RFC 6409 §8), nothing else changes."""

import email
import email.policy
from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from kubemta.v1 import message_pb2
from kubemta_ingress.submission_headers import header_section_end, with_missing_headers

WHEN = datetime(2026, 12, 5, 9, 30, 0, tzinfo=UTC)
DATE = b"Date: Sat, 05 Dec 2026 09:30:00 +0000\r\n"
MSGID = b"Message-ID: <Q1@mta.example>\r\n"


def complete(content: bytes) -> bytes:
    return with_missing_headers(content, when=WHEN, message_id="Q1@mta.example")


def test_both_are_added_at_the_end_of_the_header_section() -> None:
    content = b"From: app@example.com\r\nTo: bob@example.org\r\nSubject: hi\r\n\r\nbody\r\n"
    assert complete(content) == (
        b"From: app@example.com\r\nTo: bob@example.org\r\nSubject: hi\r\n" + DATE + MSGID + b"\r\nbody\r\n"
    )


def test_fields_present_in_any_case_are_kept_and_not_added_again() -> None:
    content = b"from: a@example.com\r\nDATE : Mon, 02 Mar 2026 12:00:00 +0000\r\nmessage-id: <x@y>\r\n\r\nb\r\n"
    assert complete(content) == content


def test_only_the_missing_one_is_added() -> None:
    content = b"From: a@example.com\r\nMessage-Id: <x@y>\r\n\r\nb\r\n"
    assert complete(content) == b"From: a@example.com\r\nMessage-Id: <x@y>\r\n" + DATE + b"\r\nb\r\n"


def test_a_date_in_a_folded_continuation_or_the_body_does_not_count() -> None:
    content = b"Subject: a\r\n Date: not a field\r\n\r\nDate: in the body\r\nMessage-ID: <b@body>\r\n"
    added = complete(content)
    assert added.startswith(b"Subject: a\r\n Date: not a field\r\n" + DATE + MSGID + b"\r\n")
    assert added.endswith(b"\r\nDate: in the body\r\nMessage-ID: <b@body>\r\n")


def test_a_message_without_headers_or_separator_gets_its_body_kept_as_body() -> None:
    assert complete(b"just a line of text\r\n") == DATE + MSGID + b"\r\njust a line of text\r\n"
    assert complete(b"\r\nbody only\r\n") == DATE + MSGID + b"\r\nbody only\r\n"
    assert complete(b"Subject: headers only\r\n") == b"Subject: headers only\r\n" + DATE + MSGID + b"\r\n"


def test_a_hostile_message_id_part_cannot_break_the_field() -> None:
    added = with_missing_headers(b"Subject: x\r\n\r\n", when=WHEN, message_id="Q1@evil\r\nBcc: x@y <z>")
    assert b"Message-ID: <Q1@evil--Bcc:-x@y--z->\r\n" in added


header_line = st.from_regex(r"[A-Za-z-]{1,12}: [ -~]{0,30}", fullmatch=True)
body_line = st.from_regex(r"[ -~]{0,40}", fullmatch=True)


@given(st.lists(header_line, max_size=6), st.booleans(), st.lists(body_line, max_size=4))
def test_fuzz_the_result_parses_with_exactly_one_date_and_message_id(headers, separator, body) -> None:
    content = "".join(f"{line}\r\n" for line in headers).encode()
    if separator:
        content += b"\r\n"
    content += "".join(f"{line}\r\n" for line in body).encode()
    completed = complete(content)
    assert complete(completed) == completed  # idempotent
    end, has_separator = header_section_end(content)
    body = content[end + 2 :] if has_separator else content[end:]
    new_end, new_separator = header_section_end(completed)
    assert new_separator
    assert completed[:end] == content[:end]  # the header fields, unchanged and in order
    assert completed[new_end + 2 :] == body  # the body, unchanged
    parsed = email.message_from_bytes(completed, policy=email.policy.default)
    assert len(parsed.get_all("Date") or []) >= 1
    assert len(parsed.get_all("Message-ID") or []) >= 1


# -- through SMTP: trusted sessions get them, strangers' mail is queued as it came --------------------------


async def queue(harness, message: bytes, recipient: str) -> message_pb2.AcceptedMessage:
    client = await harness.connect()
    assert (await client.last("MAIL FROM:<app@example.com>")).startswith("250")
    assert (await client.last(f"RCPT TO:<{recipient}>")).startswith("250")
    assert (await client.last("DATA")).startswith("354")
    await client.send(message + b".\r\n")
    reply = (await client.read_reply())[-1]
    assert reply.startswith("250 2.0.0 Ok: queued as "), reply
    return message_pb2.AcceptedMessage.FromString(harness.publisher.published[-1].body)


BARE = b"From: app@example.com\r\nTo: bob@example.org\r\nSubject: from an app library\r\n\r\nHello\r\n"


def original(accepted: message_pb2.AcceptedMessage) -> bytes:
    """The content without the Received: header the ingress prepends."""
    content = accepted.content
    assert content.startswith(b"Received: ")
    return content[content.index(b"\r\nFrom: ") + 2 :]


async def test_mail_from_a_relay_network_client_gets_date_and_message_id(start_server) -> None:
    harness = await start_server(relay_networks=("127.0.0.0/8",))
    accepted = await queue(harness, BARE, "bob@example.net")
    parsed = email.message_from_bytes(accepted.content, policy=email.policy.default)
    assert parsed["Message-ID"] == f"<{accepted.queue_id}@{harness.server._hostname}>"
    assert parsed["Date"].datetime.timestamp() == accepted.arrival_time.seconds
    added = f"Date: {parsed['Date']}\r\nMessage-ID: {parsed['Message-ID']}\r\n".encode()
    assert original(accepted) == BARE.replace(b"\r\n\r\n", b"\r\n" + added + b"\r\n", 1)


async def test_mail_from_a_stranger_is_queued_as_it_came(start_server) -> None:
    harness = await start_server(local_domains=("example.org",), relay_networks=("192.0.2.0/24",))
    accepted = await queue(harness, BARE, "bob@example.org")
    assert accepted.trust == message_pb2.TRUST_UNTRUSTED
    assert original(accepted) == BARE
