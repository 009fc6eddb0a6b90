"""RFC 5321 limits and replies, with their exact codes, against the real ingress server.

Line limits (section 4.5.3.1.4 command line 512 octets, 4.5.3.1.6 text line 1000
octets, the transparency dot not counted), SIZE (RFC 1870) at MAIL and during DATA,
at least 100 recipients (4.5.3.1.8), and the reply to every command and sequence
error, each with an RFC 3463 enhanced code (RFC 2034 section 3).
"""

import re

import pytest

from kubemta.v1 import message_pb2
from kubemta_ingress import replies
from kubemta_ingress.settings import IngressSettings

ENHANCED_REPLY = re.compile(r"^[245]\d\d[ -][245]\.\d{1,3}\.\d{1,3} ")
HEADERS = (
    b"From: a@example.net\r\nTo: user@example.org\r\nSubject: limits\r\n"
    b"Date: Mon, 02 Mar 2026 12:00:00 +0000\r\nMessage-ID: <limits@example.net>\r\n\r\n"
)


async def open_data(client) -> None:
    assert (await client.last("MAIL FROM:<a@example.net>")).startswith("250 2.1.0")
    assert (await client.last("RCPT TO:<user@example.org>")).startswith("250 2.1.5")
    assert (await client.last("DATA")).startswith("354 ")


async def data(client, wire: bytes) -> str:
    """DATA with `wire` (already dot-stuffed) and the end-of-data line; the final reply."""
    await open_data(client)
    await client.send(wire + b".\r\n")
    reply: list[str] = await client.read_reply()
    return reply[-1]


def content_of(harness, index: int = -1) -> bytes:
    content = message_pb2.AcceptedMessage.FromString(harness.publisher.published[index].body).content
    return content[content.index(b"\r\n", content.index(b"; ")) + 2 :]


# -- command line: 512 octets with CRLF (RFC 5321 section 4.5.3.1.4) --


async def test_command_line_of_512_octets_is_accepted(start_server):
    harness = await start_server()
    client = await harness.connect()
    line = "NOOP " + "x" * (512 - len("NOOP ") - 2)
    assert len(line) + 2 == 512
    assert await client.last(line) == "250 2.0.0 OK"
    sender = "<" + "s" * (512 - len("MAIL FROM:<@example.net>") - 2) + "@example.net>"
    assert len("MAIL FROM:" + sender) + 2 == 512
    assert (await client.last("MAIL FROM:" + sender)).startswith("250 2.1.0")
    recipient = "<" + "r" * (512 - len("RCPT TO:<@example.org>") - 2) + "@example.org>"
    assert (await client.last("RCPT TO:" + recipient)).startswith("250 2.1.5")


@pytest.mark.parametrize("length", [700, 1001, 1002, 5000, 70000])  # MAIL after EHLO: 512 + SIZE, SMTPUTF8, DSN
async def test_command_line_over_the_limit_is_500_5_5_2(start_server, length):
    harness = await start_server()
    client = await harness.connect()
    assert await client.last("NOOP " + "x" * length) == replies.COMMAND_TOO_LONG
    assert await client.last("MAIL FROM:<" + "a" * length + "@example.net>") == replies.COMMAND_TOO_LONG
    # the session goes on, and no transaction was opened
    assert (await client.last("RCPT TO:<user@example.org>")).startswith("503 5.5.1 ")
    assert await client.last("NOOP") == "250 2.0.0 OK"


# -- text line: 1000 octets with CRLF (RFC 5321 section 4.5.3.1.6) --


async def test_text_line_of_1000_octets_is_accepted_byte_exact(start_server):
    harness = await start_server()
    client = await harness.connect()
    longest = b"y" * 998 + b"\r\n"
    dotted = b"." + b"z" * 997 + b"\r\n"  # 1000 octets in the message, 1001 on the wire with the stuffed dot
    reply = await data(client, HEADERS + longest + b"." + dotted + b"end\r\n")
    assert reply.startswith("250 2.0.0 Ok: queued as ")
    assert content_of(harness) == HEADERS + longest + dotted + b"end\r\n"


@pytest.mark.parametrize("length", [999, 1000, 1001, 4000, 200000])
async def test_text_line_over_1000_octets_is_refused(start_server, metrics, length):
    """`length` octets before the CRLF; 999 is one octet over the limit."""
    harness = await start_server()
    client = await harness.connect()
    before = metrics.rejected("line_too_long")
    assert await data(client, HEADERS + b"x" * length + b"\r\nend\r\n") == replies.LINE_TOO_LONG
    assert harness.publisher.published == []
    assert metrics.rejected("line_too_long") == before + 1
    assert await data(client, HEADERS + b"fine\r\n") == replies.QUEUED.format(
        queue_id=message_pb2.AcceptedMessage.FromString(harness.publisher.published[-1].body).queue_id
    )


async def test_stuffed_text_line_over_the_limit_is_refused(start_server):
    """The transparency dot is not counted, the rest is: 999 octets after unstuffing is too long."""
    harness = await start_server()
    client = await harness.connect()
    assert await data(client, HEADERS + b".." + b"x" * 998 + b"\r\n") == replies.LINE_TOO_LONG
    assert harness.publisher.published == []


# -- SIZE (RFC 1870) at MAIL and during DATA --


async def test_size_is_declared_and_enforced_at_mail(start_server, metrics):
    harness = await start_server(max_message_size=5000)
    client = await harness.connect(ehlo=None)
    assert "250-SIZE 5000" in await client.command("EHLO client.example")
    before = metrics.rejected("message_too_big")
    assert (
        await client.last("MAIL FROM:<a@example.net> SIZE=5001")
        == "552 5.3.4 Error: message size exceeds fixed maximum message size"
    )
    assert metrics.rejected("message_too_big") == before + 1
    assert (await client.last("RCPT TO:<user@example.org>")).startswith("503 5.5.1 ")  # no transaction
    assert (await client.last("MAIL FROM:<a@example.net> SIZE=5000")).startswith("250 2.1.0")
    assert (await client.last("RSET")) == "250 2.0.0 OK"
    assert (await client.last("MAIL FROM:<a@example.net> SIZE=abc")).startswith("501 5.5.4 ")


async def test_size_is_enforced_during_data(start_server, metrics):
    harness = await start_server(max_message_size=5000)
    client = await harness.connect()
    before = metrics.rejected("message_too_big")
    # declared small, sent big: the limit counts what arrives
    assert (await client.last("MAIL FROM:<a@example.net> SIZE=100")).startswith("250 2.1.0")
    assert (await client.last("RCPT TO:<user@example.org>")).startswith("250 2.1.5")
    assert (await client.last("DATA")).startswith("354 ")
    await client.send(HEADERS + (b"z" * 98 + b"\r\n") * 60 + b".\r\n")
    assert (await client.read_reply())[-1] == "552 5.3.4 Error: Too much mail data"
    assert metrics.rejected("message_too_big") == before + 1
    assert harness.publisher.published == []
    body = (b"w" * 98 + b"\r\n") * 48
    exact = HEADERS + body + b"v" * (5000 - len(HEADERS) - len(body) - 2) + b"\r\n"
    assert len(exact) == 5000
    assert (await data(client, exact)).startswith("250 2.0.0 ")


# -- recipients: at least 100 (RFC 5321 section 4.5.3.1.8) --


def test_default_recipient_limit_is_at_least_100():
    assert IngressSettings.model_fields["max_recipients"].default >= 100


async def test_one_hundred_recipients_are_accepted(start_server):
    harness = await start_server(max_recipients=IngressSettings.model_fields["max_recipients"].default)
    client = await harness.connect()
    assert (await client.last("MAIL FROM:<a@example.net>")).startswith("250 2.1.0")
    for number in range(100):
        assert await client.last(f"RCPT TO:<user{number}@example.org>") == "250 2.1.5 Ok"
    assert (await client.last("DATA")).startswith("354 ")
    await client.send(HEADERS + b"many\r\n.\r\n")
    assert (await client.read_reply())[-1].startswith("250 2.0.0 Ok: queued as ")
    [published] = harness.publisher.published
    assert len(message_pb2.AcceptedMessage.FromString(published.body).recipients) == 100


# -- replies to every command and sequence error --


async def test_command_replies_have_exact_codes(start_server):
    harness = await start_server()
    client = await harness.connect()
    expected = {
        "NOOP": "250 2.0.0 OK",
        "NOOP anything": "250 2.0.0 OK",
        "RSET": "250 2.0.0 OK",
        "RSET now": "501 5.5.4 Syntax: RSET",
        "BOGUS": '500 5.5.2 Error: command "BOGUS" not recognized',
        "": "500 5.5.2 Error: bad syntax",
        "EXPN staff": "502 5.5.1 EXPN not implemented",
        "VRFY <user@example.org>": "252 2.0.0 Cannot VRFY user, but will accept message and attempt delivery",
        "VRFY": "501 5.5.4 Syntax: VRFY <address>",
        "VRFY @": "501 5.5.4 Could not VRFY @",
        "HELP MAIL": "214 2.0.0 Syntax: MAIL FROM: <address> [SP <mail-parameters>]",
        "HELP NOSUCH": None,  # 501 5.5.4 Supported commands: ...
        "HELP": None,  # 214 2.0.0 Supported commands: ...
        "RCPT TO:<user@example.org>": "503 5.5.1 Error: need MAIL command",
        "DATA": "503 5.5.1 Error: need RCPT command",
        "MAIL": "501 5.5.4 Syntax: MAIL FROM: <address> [SP <mail-parameters>]",
        "MAIL TO:<a@example.net>": "501 5.5.4 Syntax: MAIL FROM: <address> [SP <mail-parameters>]",
        "MAIL FROM:<a@example.net> BODY=BINARYMIME": "501 5.5.4 Error: BODY can only be one of 7BIT, 8BITMIME",
        "MAIL FROM:<a@example.net> FOO=BAR": "555 5.5.4 MAIL FROM parameters not recognized or not implemented",
    }
    for line, reply in expected.items():
        answer = await client.last(line)
        if reply is not None:
            assert answer == reply, line
    help_reply = await client.last("HELP")
    assert help_reply.startswith("214 2.0.0 Supported commands: ") and "MAIL" in help_reply
    assert (await client.last("HELP NOSUCH")).startswith("501 5.5.4 Supported commands: ")
    # a transaction, and the sequence errors inside it
    assert await client.last("MAIL FROM:<a@example.net>") == "250 2.1.0 Ok"
    assert await client.last("MAIL FROM:<b@example.net>") == "503 5.5.1 Error: nested MAIL command"
    assert await client.last("DATA") == "503 5.5.1 Error: need RCPT command"
    assert await client.last("RCPT") == "501 5.5.4 Syntax: RCPT TO: <address> [SP <mail-parameters>]"
    assert await client.last("RCPT TO:<user@example.org>") == "250 2.1.5 Ok"
    assert await client.last("DATA now") == "501 5.5.4 Syntax: DATA"
    assert await client.last("RSET") == "250 2.0.0 OK"
    assert await client.last("RCPT TO:<user@example.org>") == "503 5.5.1 Error: need MAIL command"
    assert await client.last("QUIT now") == "501 5.5.4 Syntax: QUIT"
    assert await client.last("QUIT") == "221 2.0.0 Bye"
    assert await client.until_closed() == b""


async def test_mail_before_helo_is_a_bad_sequence(start_server):
    harness = await start_server()
    client = await harness.connect(ehlo=None)
    assert await client.last("MAIL FROM:<a@example.net>") == "503 5.5.1 Error: send HELO first"
    assert await client.last("EHLO") == "501 Syntax: EHLO hostname"  # replies to EHLO stay verbatim (RFC 2034)
    assert await client.last("HELO") == "501 Syntax: HELO hostname"


async def test_every_reply_after_ehlo_has_an_enhanced_code(start_server):
    harness = await start_server(max_message_size=3000)
    client = await harness.connect()
    answers: list[str] = []
    for line in [
        "NOOP " + "x" * 600,
        "HELP",
        "HELP DATA",
        "VRFY x",
        "VRFY <x",
        "EXPN x",
        "ETRN example.org",
        "TURN",
        "MAIL FROM:<a@example.net> SIZE=99999",
    ]:
        answers.append(await client.last(line))
    answers.append(await data(client, HEADERS + b"x" * 1500 + b"\r\n"))
    answers.append(await data(client, HEADERS + (b"y" * 500 + b"\r\n") * 10))
    answers.append(await data(client, HEADERS + b"ok\r\n"))
    answers.append(await client.last("QUIT"))
    assert [answer for answer in answers if not ENHANCED_REPLY.match(answer)] == []
