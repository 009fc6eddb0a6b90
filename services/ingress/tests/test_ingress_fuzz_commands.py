"""Hypothesis fuzzing of the SMTP command layer through the real ingress server.

Raw bytes per command line and random command sequences, over one real server: every
line gets one well-formed reply within a bound (no hang), garbage never gets a 2xx,
a known command only gets a reply code RFC 5321 section 4.3.2 allows for it, nothing
is logged as an error or with a traceback, and the server serves the next session.
"""

import asyncio
import logging
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.harness.ingress_kit import close_writer

REPLY_LINE = re.compile(rb"^[2-5]\d\d[ -]")
BOUND = 3.0  # seconds for any one reply

# RFC 5321 section 4.3.2 (and RFC 1870, 2034, 3207, 4954 for the extensions) reply codes per command.
ALLOWED: dict[bytes, set[int]] = {
    b"HELO": {250, 501, 502, 504, 550},
    b"EHLO": {250, 501, 502, 504, 550},
    b"MAIL": {250, 451, 452, 455, 500, 501, 503, 530, 550, 552, 553, 554, 555},
    b"RCPT": {250, 251, 450, 451, 452, 455, 500, 501, 503, 530, 550, 551, 552, 553, 554, 555},
    b"DATA": {354, 451, 500, 501, 503, 530, 554},
    b"RSET": {250, 500, 501},
    b"NOOP": {250, 500},
    b"QUIT": {221, 500, 501},
    b"VRFY": {250, 251, 252, 500, 501, 502, 504, 530, 550, 551, 553},
    b"EXPN": {250, 252, 500, 501, 502, 504, 550},
    b"HELP": {211, 214, 500, 501, 502, 504},
    b"STARTTLS": {220, 454, 500, 501, 502, 503},
    b"AUTH": {235, 334, 432, 454, 500, 501, 502, 503, 504, 530, 534, 535, 538},
}
AFTER_DATA = {250, 451, 452, 500, 550, 552, 554}
VERBS = sorted(ALLOWED)

printable = st.binary(max_size=40).map(lambda raw: bytes(byte % 95 + 32 for byte in raw))
no_lf = st.binary(max_size=120).filter(lambda raw: b"\n" not in raw)
address = st.one_of(
    st.just(b"<user@example.org>"),
    st.just(b"<>"),
    st.builds(lambda local, domain: b"<" + local + b"@" + domain + b">", printable, printable),
    st.builds(lambda raw: b"<" + raw + b">", no_lf),
    no_lf,
)
argument = st.one_of(
    st.just(b""),
    st.builds(lambda a, p: b"FROM:" + a + p, address, st.sampled_from([b"", b" SIZE=10", b" BODY=8BITMIME", b" X=Y"])),
    st.builds(lambda a: b"TO:" + a, address),
    printable,
    no_lf,
)
verb = st.one_of(
    st.sampled_from(VERBS),
    st.sampled_from(VERBS).map(bytes.lower),
    printable.filter(lambda raw: b" " not in raw),
    st.binary(min_size=1, max_size=12).filter(lambda raw: not ({10, 13, 32} & set(raw))),
)
command = st.builds(lambda v, a: v + (b" " + a if a else b""), verb, argument)
dirty = st.builds(  # a known command with a bare CR or a NUL inside: never executed
    lambda v, a, c, b: v + b" " + a + c + b,
    st.sampled_from(VERBS),
    printable,
    st.sampled_from([b"\r", b"\0"]),
    printable,
)
raw_line = st.one_of(command, dirty, no_lf, st.binary(min_size=500, max_size=1200).filter(lambda raw: b"\n" not in raw))


def verb_of(line: bytes) -> bytes:
    """The command word as aiosmtpd finds it."""
    return line.partition(b" ")[0].upper()


class Session:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.closed = False

    async def reply(self) -> tuple[int, list[bytes]]:
        """One complete reply (bounded); code 0 when the server closed the connection."""
        lines: list[bytes] = []
        async with asyncio.timeout(BOUND):
            while True:
                raw = await self.reader.readline()
                if not raw:
                    self.closed = True
                    return 0, lines
                assert raw.endswith(b"\r\n"), raw
                assert REPLY_LINE.match(raw), raw
                lines.append(raw)
                if raw[3:4] == b" ":
                    return int(raw[:3]), lines

    async def send(self, line: bytes) -> tuple[int, list[bytes]]:
        self.writer.write(line + b"\r\n")
        await self.writer.drain()
        return await self.reply()

    async def close(self) -> None:
        await close_writer(self.writer)


async def open_session(port: int, ehlo: bool = True) -> Session:
    async with asyncio.timeout(BOUND):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    session = Session(reader, writer)
    code, _ = await session.reply()
    assert code == 220
    if ehlo:
        code, _ = await session.send(b"EHLO fuzz.example")
        assert code == 250
    return session


async def play(session: Session, lines: list[bytes]) -> None:
    """Send each line, check its reply; follow DATA and AUTH to their end; stop when the server closes."""
    for line in lines:
        code, reply = await session.send(line)
        if code == 0 or session.closed:
            return
        name = verb_of(line)
        if name not in ALLOWED or b"\r" in line or b"\x00" in line:
            assert code >= 500 or code == 421, (line, reply)  # garbage never gets a 2xx (nor a 3xx)
        else:
            assert code in ALLOWED[name] or code == 421, (line, reply)
        if code == 421:
            return
        if code == 354:
            code, reply = await session.send(b"fuzz\r\n.")
            assert code in AFTER_DATA, reply
        elif code == 334:
            code, reply = await session.send(b"*")  # RFC 4954 section 4: cancel the exchange
            assert code == 501, reply


@pytest.fixture
async def fuzz_server(start_server):
    return await start_server(max_message_size=100000, smtp_timeout=10.0)


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much],
    database=None,
)
@given(lines=st.lists(raw_line, min_size=1, max_size=8), ehlo=st.booleans())
async def test_fuzzed_command_lines(fuzz_server, caplog, lines, ehlo):
    caplog.set_level(logging.WARNING)
    caplog.clear()
    session = await open_session(fuzz_server.port, ehlo=ehlo)
    try:
        await play(session, lines)
    finally:
        await session.close()
    errors = [record for record in caplog.records if record.levelno >= logging.ERROR or record.exc_info]
    assert errors == [], [record.getMessage() for record in errors]
    # the server still serves a new session
    follow_up = await open_session(fuzz_server.port)
    try:
        assert (await follow_up.send(b"NOOP"))[0] == 250
    finally:
        await follow_up.close()


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)
@given(
    verbs=st.lists(st.sampled_from([b"MAIL FROM:<a@example.net>", b"RCPT TO:<user@example.org>", b"DATA",
                                    b"RSET", b"NOOP", b"HELO fuzz.example", b"EHLO fuzz.example", b"VRFY x",
                                    b"MAIL FROM:<>", b"RCPT TO:<>", b"BDAT 10", b"STARTTLS"]),
                   min_size=1, max_size=12)
)  # fmt: skip
async def test_random_command_sequences(fuzz_server, caplog, verbs):
    """Valid commands in any order: only RFC-allowed replies, no error logged, pipelined or not."""
    caplog.set_level(logging.WARNING)
    caplog.clear()
    session = await open_session(fuzz_server.port, ehlo=False)
    try:
        await play(session, verbs)
    finally:
        await session.close()
    errors = [record for record in caplog.records if record.levelno >= logging.ERROR or record.exc_info]
    assert errors == [], [record.getMessage() for record in errors]


@pytest.mark.parametrize(
    "line",
    [b'MAIL FROM:"', b'RCPT TO:"', b'VRFY "', b'MAIL FROM:<"@example.net>', b'MAIL FROM:<a@example.net> SIZE="'],
    ids=repr,
)
async def test_unparsable_addresses_get_a_syntax_error_not_an_internal_error(fuzz_server, caplog, line):
    """aiosmtpd's address parser raises IndexError on some input; that is a 501, never a 451 with a traceback."""
    session = await open_session(fuzz_server.port)
    try:
        if line.startswith(b"RCPT"):
            assert (await session.send(b"MAIL FROM:<a@example.net>"))[0] == 250
        code, reply = await session.send(line)
        assert 500 <= code < 600, reply
        assert (await session.send(b"NOOP"))[0] == 250
    finally:
        await session.close()
    assert [record for record in caplog.records if record.exc_info] == []


async def test_a_real_transaction_after_the_fuzzing(fuzz_server):
    session = await open_session(fuzz_server.port)
    try:
        for line in [b"\xff\xfe", b"MAIL FROM:<\x00>", b"RCPT", b"NOOP \xc3\x28"]:
            await session.send(line)
        assert (await session.send(b"RSET"))[0] == 250
        assert (await session.send(b"MAIL FROM:<a@example.net>"))[0] == 250
        assert (await session.send(b"RCPT TO:<user@example.org>"))[0] == 250
        assert (await session.send(b"DATA"))[0] == 354
        assert (await session.send(b"Subject: after fuzz\r\n\r\nok\r\n."))[0] == 250
    finally:
        await session.close()
    assert len(fuzz_server.publisher.published) == 1


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"VRFY [\x80", b"501 5.5.4 Could not VRFY [?"),  # found by test_fuzzed_command_lines
        (b"VRFY ]`\x8fy%\xca", b"501 5.5.4 Could not VRFY ]`?y%?"),
        (b"VRFY @\x1b[31m\x7f", b"501 5.5.4 Could not VRFY @?[31m?"),  # nor a terminal's escape (CR, NUL: a 500)
        ("VRFY @é".encode(), "501 5.5.4 Could not VRFY @é".encode()),  # valid UTF-8 stays (SMTPUTF8)
        (b"\x1b[31mX", b'500 5.5.2 Error: command "?[31MX" not recognized'),  # the unknown command's echo
    ],
    ids=repr,
)
async def test_a_reply_echoing_undecodable_or_control_bytes_is_sent_with_them_replaced(
    fuzz_server, caplog, line, expected
):
    """aiosmtpd echoes a VRFY argument that is not an address, and an unknown command; a byte that is not UTF-8
    arrives in the argument as a lone surrogate, which cannot be encoded: the reply was a 451 "internal error" with
    a logged traceback. A character a reply line cannot carry becomes `?`, and the session goes on."""
    caplog.set_level(logging.WARNING)
    session = await open_session(fuzz_server.port)
    try:
        code, reply = await session.send(line)
        assert code == int(expected[:3])
        assert reply == [expected + b"\r\n"]
        assert (await session.send(b"NOOP"))[0] == 250
    finally:
        await session.close()
    assert [record for record in caplog.records if record.levelno >= logging.ERROR or record.exc_info] == []
