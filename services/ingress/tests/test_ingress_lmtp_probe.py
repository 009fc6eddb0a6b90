"""Unit tests of one LMTP recipient probe (lmtp_probe.py): the dialogue over in-memory streams, the replies
it understands, and the command lines it may send (never a malformed one, whatever the address)."""

import asyncio
from typing import cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kubemta_ingress.lmtp_probe import (
    MAX_COMMAND_LINE,
    MAX_DETAIL,
    MAX_REPLY_LINES,
    ProbeResult,
    ProbeStatus,
    ProtocolError,
    UnsendableAddress,
    command_line,
    printable,
    probe,
    rcpt_command,
    read_reply,
)

LHLO_OK = b"250-mailstore.test\r\n250-PIPELINING\r\n250-ENHANCEDSTATUSCODES\r\n250 8BITMIME\r\n"
LHLO_UTF8 = b"250-mailstore.test\r\n250-SMTPUTF8\r\n250 8BITMIME\r\n"


class FakeWriter:
    """Collects what the probe writes."""

    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, data: bytes) -> None:
        self.data += data

    async def drain(self) -> None:
        await asyncio.sleep(0)

    @property
    def lines(self) -> list[bytes]:
        return bytes(self.data).split(b"\r\n")[:-1]


def reader_with(data: bytes, *, eof: bool = True, limit: int = 4096) -> asyncio.StreamReader:
    reader = asyncio.StreamReader(limit=limit)
    reader.feed_data(data)
    if eof:
        reader.feed_eof()
    return reader


async def run(server_says: bytes, address: str = "alice@example.org") -> tuple[ProbeResult, FakeWriter]:
    writer = FakeWriter()
    result = await probe(
        reader_with(server_says),
        cast(asyncio.StreamWriter, writer),
        address,
        helo="mx.kubemta.test",
        server="mailstore[192.0.2.7]",
    )
    return result, writer


async def test_a_known_recipient_is_the_lmtp_start_of_a_transaction_and_quit() -> None:
    result, writer = await run(b"220 mailstore.test LMTP ready\r\n" + LHLO_OK + b"250 2.1.0 OK\r\n250 2.1.5 OK\r\n")
    assert writer.lines == [
        b"LHLO mx.kubemta.test",
        b"MAIL FROM:<>",  # the null sender: a probe can never cause a bounce
        b"RCPT TO:<alice@example.org>",
        b"QUIT",
    ]
    assert result.status is ProbeStatus.KNOWN


async def test_an_unknown_recipient_keeps_the_servers_reply_postfix_style() -> None:
    refusal = b"550 5.1.1 <bob@example.org> User doesn't exist: bob@example.org\r\n"
    result, _ = await run(b"220 ready\r\n" + LHLO_OK + b"250 2.1.0 OK\r\n" + refusal, "bob@example.org")
    assert result.status is ProbeStatus.UNKNOWN
    assert result.enhanced == "5.1.1"
    assert result.detail == (
        "host mailstore[192.0.2.7] said: 550 5.1.1 <bob@example.org> User doesn't exist: bob@example.org "
        "(in reply to RCPT TO command)"
    )


@pytest.mark.parametrize(
    ("script", "stage"),
    [
        (b"421 4.3.2 shutting down\r\n", "refused to talk to me"),
        (b"554 5.3.2 no service\r\n", "refused to talk to me"),
        (b"220 ready\r\n500 5.5.1 what\r\n", "in reply to LHLO"),
        (b"220 ready\r\n" + LHLO_OK + b"452 4.3.1 full\r\n", "in reply to MAIL FROM"),
        (b"220 ready\r\n" + LHLO_OK + b"550 5.7.1 not you\r\n", "in reply to MAIL FROM"),  # not about the recipient
        (b"220 ready\r\n" + LHLO_OK + b"250 OK\r\n451 4.3.0 Temporary internal error\r\n", "in reply to RCPT TO"),
    ],
)
async def test_anything_but_a_rcpt_answer_is_temporary(script: bytes, stage: str) -> None:
    result, _ = await run(script)
    assert result.status is ProbeStatus.TEMPFAIL
    assert stage in result.detail


@pytest.mark.parametrize(
    "script",
    [
        b"",  # closed at once
        b"220 ready\r\n",  # closed after the greeting
        b"hello\r\n",  # not a reply
        b"220-ready\r\n250 mixed codes\r\n",
        b"220 ready\r\n" + b"250-x\r\n" * (MAX_REPLY_LINES + 1),
        b"2200 ready\r\n",
    ],
)
async def test_broken_replies_are_protocol_errors(script: bytes) -> None:
    with pytest.raises(ProtocolError):
        await run(script)


async def test_a_reply_line_longer_than_the_read_limit_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="too long"):
        await read_reply(reader_with(b"220 " + b"x" * 5000 + b"\r\n", limit=1024))


async def test_a_bare_reply_code_is_a_reply() -> None:
    reply = await read_reply(reader_with(b"250\r\n"))
    assert reply.code == 250 and reply.lines == ("",)


async def test_an_smtputf8_address_is_sent_with_the_smtputf8_parameter_in_utf8() -> None:
    result, writer = await run(b"220 ready\r\n" + LHLO_UTF8 + b"250 2.1.0 OK\r\n250 2.1.5 OK\r\n", "jörg@example.org")
    assert result.status is ProbeStatus.KNOWN
    assert writer.lines[1:3] == [b"MAIL FROM:<> SMTPUTF8", "RCPT TO:<jörg@example.org>".encode()]


async def test_an_smtputf8_address_to_a_server_without_smtputf8_is_refused_before_mail() -> None:
    result, writer = await run(b"220 ready\r\n" + LHLO_OK, "jörg@example.org")
    assert result.status is ProbeStatus.UNKNOWN
    assert result.enhanced == "5.6.7"
    assert writer.lines == [b"LHLO mx.kubemta.test"]


@pytest.mark.parametrize(
    "address",
    [
        "alice@example.org\r\nDATA",
        "alice\n@example.org",
        "alice\r@example.org",
        "al\x00ice@example.org",
        "al\x7fice@example.org",
        "al\x85ice@example.org",  # NEL, a C1 control
        "al\u2028ice@example.org",  # LINE SEPARATOR
        "al\udcffice@example.org",  # an undecodable byte as aiosmtpd keeps it
        "a" * 600 + "@example.org",
        "alice>@example.org",
        "<alice@example.org",
        "",
        "@example.org:alice@example.org",
    ],
)
def test_hostile_addresses_are_never_written(address: str) -> None:
    with pytest.raises(UnsendableAddress):
        rcpt_command(address)


async def test_an_unsendable_address_is_refused_before_anything_is_read_or_written() -> None:
    writer = FakeWriter()
    reader = reader_with(b"", eof=False)  # would block forever if read
    with pytest.raises(UnsendableAddress):
        await probe(reader, cast(asyncio.StreamWriter, writer), "a\r\nb@example.org", helo="h", server="s")
    assert writer.data == b""


def test_encoded_words_are_sent_literally_on_one_line() -> None:
    address = "=?utf-8?q?=0D=0AAction=3A_delivered?=@example.org"
    assert rcpt_command(address) == f"RCPT TO:<{address}>\r\n".encode()


def test_non_ascii_needs_smtputf8_on_any_command_line() -> None:
    with pytest.raises(UnsendableAddress, match="SMTPUTF8"):
        command_line("LHLO hôte.example", smtputf8=False)


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=600))
def test_any_address_gives_one_well_formed_command_line_or_none(address: str) -> None:
    try:
        line = rcpt_command(address)
    except UnsendableAddress:
        return
    assert line.startswith(b"RCPT TO:<") and line.endswith(b">\r\n")
    assert len(line) <= MAX_COMMAND_LINE
    body = line[:-2]
    assert not any(byte in body for byte in b"\r\n\x00")
    assert body.decode("utf-8") == f"RCPT TO:<{address}>"


@given(st.text(max_size=1000))
def test_quoted_server_text_is_printable_ascii_and_bounded(text: str) -> None:
    clean = printable(text)
    assert len(clean) <= MAX_DETAIL
    assert all(" " <= ch <= "~" for ch in clean)
