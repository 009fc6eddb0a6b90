"""The ingress SMTP server end to end in the test's event loop: a real aiosmtpd server on
127.0.0.1:0 with a fake publisher, driven by raw asyncio streams."""

import asyncio
import re
import smtplib
from datetime import UTC, datetime, timedelta

from kubemta.v1 import message_pb2
from kubemta_common.amqp import topology
from kubemta_common.errors import PublishFailed
from kubemta_ingress import replies as reply_texts

ENHANCED_REPLY = re.compile(r"^[245]\d\d[ -][245]\.\d{1,3}\.\d{1,3} ")
QUEUED = re.compile(r"^250 2\.0\.0 Ok: queued as (\S+)$")
MESSAGE = b"From: a@example.net\r\nTo: user@example.org\r\nSubject: test\r\n\r\nHello.\r\n"


async def transaction(client, sender: str = "<sender@example.net>", rcpts=("<user@example.org>",)) -> None:
    assert (await client.last(f"MAIL FROM:{sender}")).startswith("250 2.1.0")
    for rcpt in rcpts:
        assert (await client.last(f"RCPT TO:{rcpt}")).startswith("250 2.1.5")


async def send_data(client, raw: bytes) -> str:
    """DATA with `raw` sent as is (already dot-stuffed), then the terminator; returns the final reply."""
    assert (await client.last("DATA")).startswith("354 ")
    await client.send(raw + b".\r\n")
    reply: list[str] = await client.read_reply()
    return reply[-1]


def decode(harness, index: int = -1) -> message_pb2.AcceptedMessage:
    return message_pb2.AcceptedMessage.FromString(harness.publisher.published[index].body)


async def test_greeting_and_ehlo_keywords(start_server):
    harness = await start_server(max_message_size=123456)
    client = await harness.connect(ehlo=None)
    assert client.greeting == ["220 mx.kubemta.test ESMTP kubemta"]
    reply = await client.command("EHLO client.example")
    assert reply[0] == "250-mx.kubemta.test"
    keywords = [line[4:] for line in reply[1:]]
    for keyword in ("PIPELINING", "SIZE 123456", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES"):
        assert keyword in keywords
    assert all(line.startswith("250-") for line in reply[:-1]) and reply[-1].startswith("250 ")
    assert not any(keyword.startswith(("AUTH", "STARTTLS")) for keyword in keywords)


async def test_every_reply_after_ehlo_carries_an_enhanced_code(start_server):
    harness = await start_server(max_message_size=2000)
    client = await harness.connect()
    replies: list[str] = []
    for line in [
        "NOOP",
        "HELP",
        "HELP MAIL",
        "HELP BOGUS",
        "VRFY <user@example.org>",
        "VRFY",
        "EXPN list",
        "BOGUS",
        "",
        "RSET",
        "RSET now",
        "STARTTLS",
        "AUTH PLAIN",
        "RCPT TO:<user@example.org>",
        "DATA",
        "MAIL FROM:<sender@example.net> SIZE=9999",
        "MAIL FROM:<sender@example.net> FOO=BAR",
        "MAIL FROM:<sender@example.net> BODY=BINARYMIME",
        "MAIL FROM:<sender@example.net> SMTPUTF8=yes",
        "MAIL FROM:<sender@example.net",
        "MAIL FROM:sender@example.net junk>",
        "MAIL FROM:<a@>",
        "MAIL",
        "MAIL TO:<x@example.org>",
        "MAIL FROM:<sender@example.net>",
        "MAIL FROM:<sender@example.net>",
        "DATA",
        "RCPT TO:<a@>",
        "RCPT TO:<user>",
        "RCPT",
        "RCPT TO:<user@example.org> NOTIFY=NEVER",
        "RCPT TO:<user@example.org>",
        "DATA now",
    ]:
        reply = await client.command(line)
        assert len(reply) == 1, reply
        replies.append(reply[0])
    # A command line longer than RFC 5321 section 4.5.3.1.4 allows.
    replies.append(await client.last("NOOP " + "x" * 600))
    # Data: too long a line (RFC 5321 section 4.5.3.1.6), then a message that is fine.
    assert await send_data(client, b"x" * 1200 + b"\r\n") == reply_texts.LINE_TOO_LONG
    await transaction(client)
    replies.append(await send_data(client, MESSAGE))
    replies.append(await client.last("QUIT"))
    bad = [reply for reply in replies if not ENHANCED_REPLY.match(reply)]
    assert bad == []
    assert replies[-1] == "221 2.0.0 Bye"
    assert QUEUED.match(replies[-2])


async def test_data_is_answered_354_without_enhanced_code(start_server):
    harness = await start_server()
    client = await harness.connect()
    await transaction(client)
    assert await client.last("DATA") == "354 End data with <CR><LF>.<CR><LF>"


async def test_relay_denied_outside_relay_networks_but_local_domains_accepted(start_server, metrics):
    harness = await start_server(local_domains=("example.org",), relay_networks=("10.255.255.0/24",))
    client = await harness.connect()
    denied = metrics.rejected("relay_denied")
    assert await client.last("MAIL FROM:<sender@example.net>") == "250 2.1.0 Ok"
    assert await client.last("RCPT TO:<victim@elsewhere.test>") == (
        "554 5.7.1 <victim@elsewhere.test>: Relay access denied"
    )
    assert await client.last("RCPT TO:<user@EXAMPLE.ORG>") == "250 2.1.5 Ok"
    assert await client.last("RCPT TO:<other@example.org>") == "250 2.1.5 Ok"
    assert QUEUED.match(await send_data(client, MESSAGE))
    assert list(decode(harness).recipients) == ["user@EXAMPLE.ORG", "other@example.org"]
    assert metrics.rejected("relay_denied") == denied + 1


async def test_relay_networks_may_send_anywhere(start_server):
    harness = await start_server(local_domains=(), relay_networks=("127.0.0.0/8",))
    client = await harness.connect()
    await transaction(client, rcpts=("<someone@elsewhere.test>",))
    assert QUEUED.match(await send_data(client, MESSAGE))
    assert list(decode(harness).recipients) == ["someone@elsewhere.test"]


async def test_too_many_recipients(start_server, metrics):
    harness = await start_server(max_recipients=3)
    client = await harness.connect()
    before = metrics.rejected("too_many_recipients")
    await transaction(client, rcpts=[f"<u{n}@example.org>" for n in range(3)])
    assert await client.last("RCPT TO:<u3@example.org>") == "452 4.5.3 Error: too many recipients"
    assert await client.last("RCPT TO:<u4@example.org>") == "452 4.5.3 Error: too many recipients"
    assert QUEUED.match(await send_data(client, MESSAGE))
    assert list(decode(harness).recipients) == ["u0@example.org", "u1@example.org", "u2@example.org"]
    assert metrics.rejected("too_many_recipients") == before + 2


async def test_duplicate_recipient_is_kept_once(start_server):
    harness = await start_server(max_recipients=1)
    client = await harness.connect()
    await transaction(client, rcpts=("<user@example.org>", "<user@example.org>"))
    assert QUEUED.match(await send_data(client, MESSAGE))
    assert list(decode(harness).recipients) == ["user@example.org"]


async def test_mail_size_parameter_over_the_limit(start_server, metrics):
    harness = await start_server(max_message_size=1000)
    client = await harness.connect()
    before = metrics.rejected("message_too_big")
    assert await client.last("MAIL FROM:<sender@example.net> SIZE=1001") == (
        "552 5.3.4 Error: message size exceeds fixed maximum message size"
    )
    assert metrics.rejected("message_too_big") == before + 1
    assert await client.last("MAIL FROM:<sender@example.net> SIZE=1000") == "250 2.1.0 Ok"


async def test_data_over_the_limit(start_server, metrics):
    harness = await start_server(max_message_size=len(MESSAGE))
    client = await harness.connect()
    before = metrics.rejected("message_too_big")
    await transaction(client)
    one_byte_too_many = MESSAGE[:-2] + b"!\r\n"
    assert await send_data(client, one_byte_too_many) == "552 5.3.4 Error: Too much mail data"
    await transaction(client)
    assert await send_data(client, MESSAGE + (b"y" * 70 + b"\r\n") * 1000) == "552 5.3.4 Error: Too much mail data"
    assert harness.publisher.published == [] and harness.publisher.attempts == 0
    assert metrics.rejected("message_too_big") == before + 2
    # The session goes on: a message within the limit is queued.
    await transaction(client)
    assert QUEUED.match(await send_data(client, MESSAGE))


async def test_message_exactly_at_the_limit_is_accepted(start_server):
    harness = await start_server(max_message_size=len(MESSAGE))
    client = await harness.connect()
    await transaction(client)
    assert QUEUED.match(await send_data(client, MESSAGE))


async def test_bare_line_endings_are_refused_and_not_published(start_server, metrics):
    harness = await start_server()
    client = await harness.connect()
    for body in (
        b"Subject: lf\r\n\r\nbare\nline feed\r\n",
        b"Subject: cr\r\n\r\nbare\rcarriage return\r\n",
        b"Subject: crcrlf\r\n\r\nline\r\r\n",
        b"Subject: lfcrlf\r\n\r\nline\n\r\n",
    ):
        before = metrics.rejected("bad_line_ending")
        await transaction(client)
        assert await send_data(client, body) == "550 5.6.0 Message contains bare CR or LF; lines must end in CRLF"
        assert metrics.rejected("bad_line_ending") == before + 1
    assert harness.publisher.attempts == 0


async def test_only_crlf_dot_crlf_ends_data(start_server):
    harness = await start_server()
    client = await harness.connect()
    for fake_end in (b"\n.\n", b"\r.\r", b"\r\n.\n", b"\n.\r\n", b"\r.\r\n"):
        await transaction(client)
        assert (await client.last("DATA")).startswith("354 ")
        await client.send(b"Subject: smuggle\r\n\r\nbody" + fake_end + b"MAIL FROM:<evil@example.net>\r\n")
        assert await client.silent_for(0.3)
        await client.send(b".\r\n")
        assert (await client.read_reply())[-1].startswith("550 5.6.0 ")
    assert harness.publisher.attempts == 0


async def test_nul_is_refused(start_server, metrics):
    harness = await start_server()
    client = await harness.connect()
    before = metrics.rejected("nul_character")
    await transaction(client)
    assert await send_data(client, b"Subject: nul\r\n\r\nnul \0 here\r\n") == (
        "550 5.6.0 Message contains NUL characters"
    )
    assert metrics.rejected("nul_character") == before + 1
    assert harness.publisher.attempts == 0


async def test_failing_publisher_gives_451_never_250(start_server, metrics):
    harness = await start_server()
    harness.publisher.error = PublishFailed("broker not connected")
    received = metrics.value("kubemta_messages_received_total")
    unavailable = metrics.rejected("queue_unavailable")
    client = await harness.connect()
    await transaction(client)
    assert await send_data(client, MESSAGE) == "451 4.3.0 Error: queue unavailable, try again later"
    assert harness.publisher.attempts == 1 and harness.publisher.published == []
    assert metrics.value("kubemta_messages_received_total") == received
    assert metrics.rejected("queue_unavailable") == unavailable + 1
    # The transaction is over; once the broker is back, the client's retry is queued.
    harness.publisher.error = None
    await transaction(client)
    assert QUEUED.match(await send_data(client, MESSAGE))


async def test_publisher_that_never_confirms_is_bounded_by_its_timeout(start_server, metrics):
    harness = await start_server()
    harness.publisher.hang_for = 0.3
    count = metrics.value("kubemta_smtp_accept_duration_seconds_count")
    total = metrics.value("kubemta_smtp_accept_duration_seconds_sum")
    client = await harness.connect()
    await transaction(client)
    assert (await client.last("DATA")).startswith("354 ")
    await client.send(MESSAGE + b".\r\n")
    assert await client.silent_for(0.15)
    assert (await client.read_reply(within=2.0)) == ["451 4.3.0 Error: queue unavailable, try again later"]
    assert harness.publisher.published == []
    assert metrics.value("kubemta_smtp_accept_duration_seconds_count") == count + 1
    assert metrics.value("kubemta_smtp_accept_duration_seconds_sum") - total >= 0.3


async def test_published_message_envelope_and_content(start_server, metrics):
    harness = await start_server()
    received = metrics.value("kubemta_messages_received_total")
    sizes = metrics.value("kubemta_message_size_bytes_count")
    client = await harness.connect(ehlo="client.example")
    await transaction(client, rcpts=("<user@example.org>",))
    original = (
        b"From: a@example.net\r\nTo: user@example.org\r\nSubject: dots\r\n"
        b"Date: Mon, 02 Mar 2026 12:00:00 +0000\r\nMessage-ID: <dots@example.net>\r\n\r\n"
        b".leading dot\r\n..two dots\r\n.\tdot tab\r\n8bit: \xc3\xa9\xff\r\n\r\n"
    )
    stuffed = b"".join(b"." + line if line.startswith(b".") else line for line in original.splitlines(keepends=True))
    before = datetime.now(UTC)
    reply = await send_data(client, stuffed)
    match = QUEUED.match(reply)
    assert match
    [published] = harness.publisher.published
    assert published.routing_key == topology.INBOUND
    assert published.message_type == "kubemta.v1.AcceptedMessage"
    message = message_pb2.AcceptedMessage.FromString(published.body)
    assert message.queue_id == match[1] == published.message_id
    assert message.sender == "sender@example.net"
    assert list(message.recipients) == ["user@example.org"]
    assert message.client_address == "127.0.0.1"
    assert message.client_helo == "client.example"
    assert not message.smtputf8 and not message.generated
    arrival = message.arrival_time.ToDatetime(tzinfo=UTC)
    assert before - timedelta(seconds=1) <= arrival <= datetime.now(UTC)
    header, _, rest = message.content.partition(b"\r\n" + b"From: ")
    assert b"From: " + rest == original
    assert header.startswith(b"Received: from client.example ([127.0.0.1])\r\n\tby mx.kubemta.test (kubemta)")
    assert f"with ESMTP id {message.queue_id}\r\n\tfor <user@example.org>; ".encode() in header
    assert metrics.value("kubemta_messages_received_total") == received + 1
    assert metrics.value("kubemta_message_size_bytes_count") == sizes + 1


async def test_null_sender_and_several_recipients(start_server):
    harness = await start_server()
    client = await harness.connect()
    await transaction(client, sender="<>", rcpts=("<a@example.org>", "<b@example.org>"))
    assert QUEUED.match(await send_data(client, MESSAGE))
    message = decode(harness)
    assert message.sender == ""
    assert list(message.recipients) == ["a@example.org", "b@example.org"]
    header = message.content[: message.content.index(b"\r\nFrom: ") + 2]
    assert re.fullmatch(
        rb"Received: from client\.example \(\[127\.0\.0\.1\]\)\r\n"
        rb"\tby mx\.kubemta\.test \(kubemta\) with ESMTP id [0-9A-Za-z]{16};\r\n"
        rb"\t\w{3}, \d{1,2} \w{3} \d{4} \d\d:\d\d:\d\d \+0000\r\n",
        header,
    )


async def test_smtputf8_transaction(start_server):
    harness = await start_server(local_domains=("example.org", "bücher.example"))
    client = await harness.connect()
    assert await client.last("MAIL FROM:<jörg@example.net> SMTPUTF8") == "250 2.1.0 Ok"
    assert await client.last("RCPT TO:<ünïcode@bücher.example>") == "250 2.1.5 Ok"
    text = "Subject: grüße\r\nDate: Mon, 02 Mar 2026 12:00:00 +0000\r\nMessage-ID: <u@example.net>\r\n\r\nü\r\n"
    assert QUEUED.match(await send_data(client, text.encode()))
    message = decode(harness)
    assert message.smtputf8
    assert message.sender == "jörg@example.net"
    assert list(message.recipients) == ["ünïcode@bücher.example"]
    assert b"with UTF8SMTP id" in message.content
    assert message.content.endswith(text.encode())


async def test_address_syntax_errors(start_server, metrics):
    harness = await start_server()
    client = await harness.connect()
    before = metrics.rejected("bad_address")
    assert await client.last("MAIL FROM:<nodomain>") == "501 5.1.7 Bad sender address syntax"
    assert await client.last("MAIL FROM:<a@b.>") == "501 5.1.3 Bad address syntax"
    assert await client.last("MAIL FROM:<jörg@example.net>") == (
        "553 5.6.7 Must declare SMTPUTF8 to send unicode address"
    )
    assert await client.last("MAIL FROM:<sender@example.net>") == "250 2.1.0 Ok"
    assert await client.last("RCPT TO:<user>") == "501 5.1.3 Bad recipient address syntax"
    assert await client.last("RCPT TO:<user@-bad-.example.org>") == "501 5.1.3 Bad recipient address syntax"
    assert await client.last("RCPT TO:<user@[300.1.1.1]>") == "501 5.1.3 Bad recipient address syntax"
    assert await client.last("RCPT TO:<user@>") == "501 5.1.3 Bad address syntax"
    assert await client.last("RCPT TO:<ü@example.org>") == "553 5.6.7 Must declare SMTPUTF8 to send unicode address"
    assert await client.send(b"RCPT TO:<\xff@example.org>\r\n") is None
    assert (await client.read_reply())[-1] == "501 5.1.3 Bad recipient address syntax"
    assert metrics.rejected("bad_address") == before + 9
    assert harness.publisher.attempts == 0


async def test_helo_client_gets_smtp_protocol(start_server):
    harness = await start_server()
    client = await harness.connect(ehlo=None)
    assert await client.last("HELO old.client") == "250 mx.kubemta.test"
    await transaction(client)
    assert QUEUED.match(await send_data(client, MESSAGE))
    assert b"from old.client ([127.0.0.1])\r\n\tby mx.kubemta.test (kubemta) with SMTP id" in decode(harness).content


async def test_mail_requires_helo(start_server):
    harness = await start_server()
    client = await harness.connect(ehlo=None)
    assert await client.last("MAIL FROM:<sender@example.net>") == "503 5.5.1 Error: send HELO first"


async def test_sessions_are_counted(start_server, metrics):
    harness = await start_server()
    before = metrics.value("kubemta_smtp_sessions_total")
    for _ in range(3):
        client = await harness.connect()
        await client.last("QUIT")
    assert metrics.value("kubemta_smtp_sessions_total") == before + 3


async def test_rejection_reasons_are_preinitialised(metrics):
    for reason in (
        "relay_denied",
        "too_many_recipients",
        "message_too_big",
        "line_too_long",
        "bad_line_ending",
        "nul_character",
        "bad_address",
        "queue_unavailable",
        "internal_error",
    ):
        assert metrics.sample("kubemta_messages_rejected_total", reason=reason) is not None


async def test_pipelined_transaction(start_server):
    harness = await start_server()
    client = await harness.connect()
    await client.send(
        b"MAIL FROM:<sender@example.net>\r\nRCPT TO:<a@example.org>\r\nRCPT TO:<x@example.org>\r\nDATA\r\n"
    )
    replies = [(await client.read_reply())[-1] for _ in range(4)]
    assert [reply[:3] for reply in replies] == ["250", "250", "250", "354"]
    await client.send(MESSAGE + b".\r\nQUIT\r\n")
    assert QUEUED.match((await client.read_reply())[-1])
    assert (await client.read_reply())[-1] == "221 2.0.0 Bye"
    assert list(decode(harness).recipients) == ["a@example.org", "x@example.org"]


def _smtplib_session(port: int, messages: list[tuple[str, list[str], bytes]]) -> list[object]:
    """Send with the standard library client (blocking; run in a thread)."""
    results: list[object] = []
    with smtplib.SMTP("127.0.0.1", port, local_hostname="client.example", timeout=5) as smtp:
        smtp.ehlo()
        results.append(smtp.has_extn("enhancedstatuscodes") and smtp.has_extn("pipelining"))
        for sender, recipients, content in messages:
            try:
                results.append(smtp.sendmail(sender, recipients, content))
            except smtplib.SMTPException as exc:
                results.append(exc)
    return results


async def test_standard_library_client(start_server):
    harness = await start_server(local_domains=("example.org",), relay_networks=("10.255.255.0/24",))
    dotted = b"Subject: smtplib\r\n\r\n.starts with a dot\r\n..two\r\nend\r\n"
    results = await asyncio.to_thread(
        _smtplib_session,
        harness.port,
        [
            ("sender@example.net", ["user@example.org", "victim@elsewhere.test"], dotted),
            ("sender@example.net", ["victim@elsewhere.test"], MESSAGE),
            ("sender@example.net", ["user@example.org"], b"Subject: lf\n\nbare line feeds\n"),
        ],
    )
    assert results[0] is True
    assert results[1] == {"victim@elsewhere.test": (554, b"5.7.1 <victim@elsewhere.test>: Relay access denied")}
    assert isinstance(results[2], smtplib.SMTPRecipientsRefused)
    assert isinstance(results[3], smtplib.SMTPDataError) and results[3].smtp_code == 550
    [published] = harness.publisher.published
    message = message_pb2.AcceptedMessage.FromString(published.body)
    assert list(message.recipients) == ["user@example.org"]
    assert message.content.endswith(b"\r\n" + dotted)


async def test_command_size_limits_are_per_connection(start_server):
    """aiosmtpd grows a class-wide MAIL line limit on every EHLO; each connection has its own here."""
    harness = await start_server()
    first = await harness.connect()
    second = await harness.connect()
    for _ in range(30):
        await second.command("EHLO again.example")
    long_sender = "<" + "a" * 700 + "@example.net>"  # over 512 + SIZE, SMTPUTF8 and DSN's room (RFC 3461)
    assert await first.last(f"MAIL FROM:{long_sender}") == reply_texts.COMMAND_TOO_LONG
