"""SMTP smuggling against the real ingress server, byte by byte over raw sockets (and swaks).

Every published end-of-data variant (SEC Consult 2023, smtpsmug, SMTP-Smuggling-Tools)
is sent inside a message followed by a smuggled second transaction. None may end DATA
early (the server stays silent until the real CRLF.CRLF), the smuggled commands are
never executed, and the message is either refused whole (bare CR/LF: 550 5.6.0, NUL:
550 5.6.0) or, when it has only CRLF line endings, published once and byte-exact.
"""

import asyncio
import socket

import pytest

from kubemta.v1 import message_pb2
from kubemta_ingress import replies
from tests.harness.tools import swaks

CARRIER = (
    b"From: a@example.net\r\nTo: user@example.org\r\nSubject: carrier\r\n"
    b"Date: Mon, 02 Mar 2026 12:00:00 +0000\r\nMessage-ID: <carrier@example.net>\r\n\r\nfirst message"
)
SMUGGLED = (
    b"MAIL FROM:<ceo@example.org>\r\n"
    b"RCPT TO:<victim@example.org>\r\n"
    b"DATA\r\n"
    b"From: ceo@example.org\r\nTo: victim@example.org\r\nSubject: smuggled\r\n\r\nforged\r\n"
)
GOOD = (
    b"From: a@example.net\r\nTo: user@example.org\r\nSubject: good\r\n"
    b"Date: Mon, 02 Mar 2026 12:00:00 +0000\r\nMessage-ID: <good@example.net>\r\n\r\nHello.\r\n"
)

# Fake end-of-data sequences with a bare CR or LF: the whole message is refused.
BARE_VARIANTS = [
    b"\n.\n",
    b"\n.\r\n",
    b"\r.\r",
    b"\r\n.\r",
    b"\r.\r\n",
    b"\r\n.\n",
    b"\n.\r",
    b"\r\n.\r\r\n",
    b"\r\r\n.\r\r\n",
    b"\n\n.\n\n",
    b"\r\n\n.\r\n",
    b"\n\x00.\n",
]
# Fake end-of-data sequences with a NUL (and CRLF only otherwise).
NUL_VARIANTS = [
    b"\r\n\x00.\r\n",
    b"\r\n.\x00\r\n",
    b"\r\n\x00.\x00\r\n",
]
# Lines that only look like an end of data, CRLF only: published, the first dot removed (RFC 5321 section 4.5.2).
CRLF_VARIANTS = [
    (b"\r\n. \r\n", b"\r\n \r\n"),
    (b"\r\n.\t\r\n", b"\r\n\t\r\n"),
    (b"\r\n..\r\n", b"\r\n.\r\n"),
    (b"\r\n .\r\n", b"\r\n .\r\n"),
    (b"\r\n.\x0b\r\n", b"\r\n\x0b\r\n"),
    (b"\r\n.\x0c\r\n", b"\r\n\x0c\r\n"),
    (b"\r\n.x\r\n", b"\r\nx\r\n"),
]


async def open_transaction(harness):
    client = await harness.connect()
    assert (await client.last("MAIL FROM:<a@example.net>")).startswith("250 2.1.0")
    assert (await client.last("RCPT TO:<user@example.org>")).startswith("250 2.1.5")
    assert (await client.last("DATA")).startswith("354 ")
    return client


async def smuggle(harness, variant: bytes) -> tuple[object, list[str]]:
    """Send carrier + variant + smuggled transaction; prove DATA is still open; end it; return the reply."""
    client = await open_transaction(harness)
    await client.send(CARRIER + variant + SMUGGLED)
    # Still in DATA: no reply to the fake end, nor to the smuggled MAIL/RCPT/DATA.
    assert await client.silent_for(0.2)
    await client.send(b".\r\n")
    reply = await client.read_reply()
    # Exactly one reply for the whole stream; nothing more follows.
    assert await client.silent_for(0.1)
    return client, reply


async def assert_session_still_serves(harness, client) -> None:
    """The session is back in command state with no transaction: a new one goes through."""
    assert await client.last("NOOP") == "250 2.0.0 OK"
    before = len(harness.publisher.published)
    assert (await client.last("MAIL FROM:<a@example.net>")).startswith("250 2.1.0")  # no nested MAIL
    assert (await client.last("RCPT TO:<user@example.org>")).startswith("250 2.1.5")
    assert (await client.last("DATA")).startswith("354 ")
    await client.send(GOOD + b".\r\n")
    assert (await client.read_reply())[-1].startswith("250 2.0.0 Ok: queued as ")
    assert len(harness.publisher.published) == before + 1


def published_content(harness, index: int = -1) -> bytes:
    message = message_pb2.AcceptedMessage.FromString(harness.publisher.published[index].body)
    assert list(message.recipients) == ["user@example.org"]
    content = message.content
    assert content.startswith(b"Received: ")
    return content[content.index(b"\r\n", content.index(b"; ")) + 2 :]  # after the Received header


@pytest.mark.parametrize("variant", BARE_VARIANTS, ids=repr)
async def test_bare_line_ending_variants_are_refused_whole(start_server, metrics, variant):
    harness = await start_server()
    before = metrics.rejected("bad_line_ending")
    client, reply = await smuggle(harness, variant)
    assert reply == [replies.BARE_LINE_ENDING]
    assert harness.publisher.published == []
    assert metrics.rejected("bad_line_ending") == before + 1
    await assert_session_still_serves(harness, client)
    assert published_content(harness) == GOOD


@pytest.mark.parametrize("variant", NUL_VARIANTS, ids=repr)
async def test_nul_variants_are_refused_whole(start_server, metrics, variant):
    harness = await start_server()
    before = metrics.rejected("nul_character")
    client, reply = await smuggle(harness, variant)
    assert reply == [replies.NUL_CHARACTER]
    assert harness.publisher.published == []
    assert metrics.rejected("nul_character") == before + 1
    await assert_session_still_serves(harness, client)


@pytest.mark.parametrize(("variant", "unstuffed"), CRLF_VARIANTS, ids=repr)
async def test_crlf_only_lookalikes_are_one_message_published_byte_exact(start_server, variant, unstuffed):
    harness = await start_server()
    client, reply = await smuggle(harness, variant)
    assert len(reply) == 1 and reply[0].startswith("250 2.0.0 Ok: queued as "), reply
    [_] = harness.publisher.published  # one message, not two
    assert published_content(harness) == CARRIER + unstuffed + SMUGGLED
    await assert_session_still_serves(harness, client)


@pytest.mark.parametrize("variant", [b"\n.\n", b"\r\n\x00.\r\n", b"\r.\r\n"], ids=repr)
async def test_variants_split_into_single_bytes_do_not_end_data(start_server, variant):
    """Packet boundaries inside the sequence change nothing."""
    harness = await start_server()
    client = await open_transaction(harness)
    sock = client.writer.get_extra_info("socket")
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for byte in CARRIER + variant + SMUGGLED:
        await client.send(bytes([byte]))
    assert await client.silent_for(0.2)
    for byte in b".\r\n":
        await client.send(bytes([byte]))
    assert (await client.read_reply())[-1].startswith("550 5.6.0 ")
    assert harness.publisher.published == []


async def test_lone_fake_terminator_keeps_data_open(start_server):
    """`<LF>.<LF>` at the end of what the client sends is not an end of data: the server waits."""
    harness = await start_server()
    client = await open_transaction(harness)
    await client.send(CARRIER + b"\n.\n")
    assert await client.silent_for(0.3)
    await client.send(b"QUIT\r\n")  # still data, not a command
    assert await client.silent_for(0.2)
    await client.send(b"\r\n.\r\n")
    assert await client.read_reply() == [replies.BARE_LINE_ENDING]
    assert await client.last("QUIT") == "221 2.0.0 Bye"
    assert harness.publisher.published == []


async def test_pipelined_smuggling_after_a_real_end_is_a_second_transaction_only_when_valid(start_server):
    """After a refused message, pipelined commands are commands again: a real second message is fine,
    the refused one never appears."""
    harness = await start_server()
    client = await open_transaction(harness)
    second = (
        b"MAIL FROM:<b@example.net>\r\nRCPT TO:<user@example.org>\r\nDATA\r\n" + GOOD + b".\r\n"
    )  # pipelined (RFC 2920) right behind the real end of the first message
    await client.send(CARRIER + b"\n.\n" + SMUGGLED + b".\r\n" + second)
    assert await client.read_reply() == [replies.BARE_LINE_ENDING]
    assert (await client.read_reply())[-1].startswith("250 2.1.0")
    assert (await client.read_reply())[-1].startswith("250 2.1.5")
    assert (await client.read_reply())[-1].startswith("354 ")
    assert (await client.read_reply())[-1].startswith("250 2.0.0 Ok: queued as ")
    [published] = harness.publisher.published
    message = message_pb2.AcceptedMessage.FromString(published.body)
    assert message.sender == "b@example.net"
    assert published_content(harness) == GOOD


# -- command lines: CRLF only (RFC 5321 section 2.3.8), like Postfix' smtpd_forbid_bare_newline = strict --


@pytest.mark.parametrize(
    "line",
    [
        b"NOOP\n",
        b"NOOP\r\r\n",
        b"RSET\n",
        b"NOOP \x00\r\n",
        b"NOOP\rQUIT\r\n",
        b"EHLO client.example\n",
    ],
    ids=repr,
)
async def test_command_lines_must_end_in_crlf(start_server, line):
    harness = await start_server()
    client = await harness.connect()
    await client.send(line)
    assert await client.read_reply() == [replies.BARE_LINE_ENDING_COMMAND]
    assert await client.last("NOOP") == "250 2.0.0 OK"


async def test_bare_cr_cannot_pipeline_a_hidden_command(start_server):
    """`MAIL FROM:<a>\\rRCPT TO:<b>` is refused whole; no transaction was opened by it."""
    harness = await start_server()
    client = await harness.connect()
    await client.send(b"MAIL FROM:<a@example.net>\rRCPT TO:<user@example.org>\r\n")
    assert await client.read_reply() == [replies.BARE_LINE_ENDING_COMMAND]
    assert (await client.last("RCPT TO:<user@example.org>")).startswith("503 5.5.1 ")


async def test_bare_lf_cannot_split_a_command(start_server):
    """`MAIL FROM:<a>\\nRCPT TO:<b>\\r\\n` opens no transaction and accepts no recipient."""
    harness = await start_server()
    client = await harness.connect()
    await client.send(b"MAIL FROM:<a@example.net>\nRCPT TO:<user@example.org>\r\nDATA\r\n")
    assert await client.read_reply() == [replies.BARE_LINE_ENDING_COMMAND]
    assert (await client.read_reply())[-1].startswith("503 5.5.1 ")  # RCPT: need MAIL
    assert (await client.read_reply())[-1].startswith("503 5.5.1 ")  # DATA: need RCPT
    assert harness.publisher.published == []


# -- swaks, a real client sending a hand-made DATA section verbatim --


@pytest.mark.parametrize("pipeline", [False, True], ids=["lockstep", "pipeline"])
async def test_swaks_bare_lf_smuggling_is_refused(start_server, tmp_path, metrics, pipeline):
    harness = await start_server()
    before = metrics.rejected("bad_line_ending")
    data = tmp_path / "smuggle.eml"
    # --no-data-fixup: swaks sends the file as is and adds only the final CRLF after the trailing dot.
    data.write_bytes(CARRIER + b"\n.\n" + SMUGGLED + b".")
    args = [
        swaks(),
        "--server", f"127.0.0.1:{harness.port}",
        "--helo", "swaks.example",
        "--from", "a@example.net",
        "--to", "user@example.org",
        "--data", str(data),
        "--no-data-fixup",
        "--timeout", "10",
    ]  # fmt: skip
    if pipeline:
        args.append("--pipeline")
    process = await asyncio.create_subprocess_exec(
        *args, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    async with asyncio.timeout(30):
        stdout, stderr = await process.communicate()
    output = stdout.decode(errors="replace") + stderr.decode(errors="replace")
    assert process.returncode != 0, output
    assert f"<** {replies.BARE_LINE_ENDING}" in output
    assert "Ok: queued" not in output
    assert "2.1.0" in output and output.count("250 2.1.0") == 1  # only swaks' own MAIL was answered
    assert harness.publisher.published == []
    assert metrics.rejected("bad_line_ending") == before + 1
