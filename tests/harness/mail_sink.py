"""A counting SMTP sink: accepts every message and records it the moment its final dot arrives.

    sink = MailSink("127.0.3.25", free_port("127.0.3.25"))
    await sink.start()
    ...                                   # deliver to sink.address:sink.port
    sink.deliveries["<id@example>"]       # how many times that Message-ID arrived
    await sink.stop()

Unlike the scripted peer (smtp_peer.py, on aiosmtpd), a message counts as delivered as soon as
the server has read its final "." line (RFC 5321 section 4.1.1.4), before the 250 is written: a
client that is killed or disconnects right after the dot has still handed the message over, as
a real MTA that commits on the dot would deliver it. aiosmtpd cancels its DATA hook when the
connection is lost, so such a message would go uncounted there.

The server is a small line-based state machine (EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT);
commands sent ahead (pipelined) are answered in order. No STARTTLS, no AUTH, no extensions but
8BITMIME and SMTPUTF8. Message-IDs are read from the header section (RFC 5322 section 3.6.4);
a message without one counts under "".
"""

import asyncio
import re
import time
from collections import Counter
from dataclasses import dataclass, field

MESSAGE_ID = re.compile(rb"^message-id:[ \t]*(<[^>\r\n]{1,998}>)", re.IGNORECASE | re.MULTILINE)
MAX_LINE = 64 * 1024  # longer than RFC 5321's 1000 octets, to let clients that break it through
MAX_MESSAGE = 64 * 1024 * 1024


def message_id_of(content: bytes) -> str:
    """The Message-ID of a message (its header section only), or "" when it has none."""
    headers, _, _ = content.partition(b"\r\n\r\n")
    found = MESSAGE_ID.search(headers)
    return found.group(1).decode("ascii", "replace") if found else ""


@dataclass(frozen=True, slots=True)
class Delivery:
    """One message the sink read up to its final dot."""

    message_id: str
    mail_from: str
    rcpt_tos: tuple[str, ...]
    size: int
    arrived: float  # time.monotonic()


@dataclass
class _Transaction:
    mail_from: str | None = None
    rcpt_tos: list[str] = field(default_factory=list)


class _SinkProtocol(asyncio.Protocol):
    """One SMTP connection to the sink."""

    def __init__(self, sink: "MailSink") -> None:
        self._sink = sink
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._transaction = _Transaction()
        self._data: bytearray | None = None  # set while reading a message
        self._done = False  # QUIT or an error: the rest of the input is ignored

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._sink.open_connections.add(transport)
        self._sink.connections += 1
        self._reply(f"220 {self._sink.hostname} ESMTP chaos sink")

    def connection_lost(self, exc: Exception | None) -> None:
        if self._transport is not None:
            self._sink.open_connections.discard(self._transport)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        # Every line that arrived is read, also when the client is gone and the replies cannot be written: a
        # message whose dot came in counts.
        while not self._done:
            end = self._buffer.find(b"\n")
            if end < 0:
                if len(self._buffer) > MAX_LINE:
                    self._reply("500 5.5.6 line too long")
                    self._close()
                return
            line = bytes(self._buffer[: end + 1])
            del self._buffer[: end + 1]
            if self._data is not None:
                self._data_line(line)
            else:
                self._command(line.rstrip(b"\r\n").decode("utf-8", "replace"))

    def _data_line(self, line: bytes) -> None:
        assert self._data is not None
        if line.rstrip(b"\r\n") == b".":
            content, self._data = bytes(self._data), None
            self._sink.record(self._transaction.mail_from or "", self._transaction.rcpt_tos, content)
            self._transaction = _Transaction()
            self._reply("250 2.0.0 Ok: delivered")
            return
        if line.startswith(b"."):
            line = line[1:]  # RFC 5321 section 4.5.2: transparency
        if len(self._data) + len(line) > MAX_MESSAGE:
            self._reply("552 5.3.4 message too big")
            self._close()
            return
        self._data += line

    def _command(self, line: str) -> None:
        verb, _, argument = line.partition(" ")
        verb = verb.upper()
        if verb == "EHLO":
            self._transaction = _Transaction()
            self._reply(f"250-{self._sink.hostname}", "250-8BITMIME", "250-SMTPUTF8", "250 SIZE 67108864")
        elif verb == "HELO":
            self._transaction = _Transaction()
            self._reply(f"250 {self._sink.hostname}")
        elif verb == "MAIL" and argument.upper().startswith("FROM:"):
            self._transaction = _Transaction(mail_from=_address(argument[5:]))
            self._reply("250 2.1.0 Ok")
        elif verb == "RCPT" and argument.upper().startswith("TO:"):
            if self._transaction.mail_from is None:
                self._reply("503 5.5.1 MAIL first")
            else:
                self._transaction.rcpt_tos.append(_address(argument[3:]))
                self._reply("250 2.1.5 Ok")
        elif verb == "DATA":
            if not self._transaction.rcpt_tos:
                self._reply("503 5.5.1 RCPT first")
            else:
                self._data = bytearray()
                self._reply("354 End data with <CR><LF>.<CR><LF>")
        elif verb == "RSET":
            self._transaction = _Transaction()
            self._reply("250 2.0.0 Ok")
        elif verb == "NOOP":
            self._reply("250 2.0.0 Ok")
        elif verb == "QUIT":
            self._reply("221 2.0.0 Bye")
            self._close()
        else:
            self._reply("502 5.5.2 command not implemented")

    def _reply(self, *lines: str) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write("".join(line + "\r\n" for line in lines).encode())

    def _close(self) -> None:
        self._done = True
        if self._transport is not None:
            self._transport.close()


def _address(argument: str) -> str:
    """The address in `<a@b> PARAM=...` (without the brackets; "" for the null sender)."""
    text = argument.strip()
    if text.startswith("<"):
        return text[1 : text.find(">")] if ">" in text else text[1:]
    return text.split(" ", 1)[0]


class MailSink:
    """An SMTP server on address:port (in the running event loop) that accepts and counts every message."""

    def __init__(self, address: str, port: int, *, hostname: str = "sink.test") -> None:
        self.address = address
        self.port = port
        self.hostname = hostname
        self.deliveries: Counter[str] = Counter()  # Message-ID -> times delivered
        self.log: list[Delivery] = []
        self.connections = 0
        self.open_connections: set[asyncio.Transport] = set()
        self._server: asyncio.Server | None = None

    @property
    def total(self) -> int:
        """Messages delivered, duplicates included."""
        return len(self.log)

    def record(self, mail_from: str, rcpt_tos: list[str], content: bytes) -> None:
        message_id = message_id_of(content)
        self.deliveries[message_id] += 1
        self.log.append(Delivery(message_id, mail_from, tuple(rcpt_tos), len(content), time.monotonic()))

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _SinkProtocol(self), self.address, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for transport in list(self.open_connections):
            transport.abort()
        async with asyncio.timeout(5):
            await self._server.wait_closed()
        self._server = None

    async def __aenter__(self) -> "MailSink":
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()
