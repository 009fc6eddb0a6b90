"""A byte-exact SMTP client on asyncio streams, for tests that must send what no library
would (bare CR/LF, NUL, fake end-of-data sequences). Every read is bounded.

    async with await RawSmtp.connect("127.0.0.1", port) as client:
        await client.ehlo()
        reply = await client.transaction("<a@b.example>", ["<c@d.example>"], b"Subject: x\\r\\n\\r\\nhi\\r\\n")
"""

import asyncio
from types import TracebackType

IO_TIMEOUT = 10.0


class RawSmtp:
    """One SMTP connection; `data` goes on the wire exactly as given."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.greeting = ""

    @classmethod
    async def connect(cls, host: str, port: int, *, source: str | None = None) -> "RawSmtp":
        """Connect (from `source` when given, e.g. another loopback address) and read the greeting."""
        local_addr = (source, 0) if source else None
        async with asyncio.timeout(IO_TIMEOUT):
            reader, writer = await asyncio.open_connection(host, port, local_addr=local_addr)
        client = cls(reader, writer)
        client.greeting = await client.reply()
        return client

    async def __aenter__(self) -> "RawSmtp":
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def reply(self) -> str:
        """The last line of one complete reply, without CRLF."""
        async with asyncio.timeout(IO_TIMEOUT):
            while True:
                raw = await self.reader.readline()
                if not raw:
                    raise ConnectionError("connection closed by the server")
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                if line[3:4] != "-":
                    return line

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def command(self, line: str | bytes) -> str:
        await self.send((line.encode() if isinstance(line, str) else line) + b"\r\n")
        return await self.reply()

    async def ehlo(self, name: str = "raw.client.test") -> str:
        reply = await self.command(f"EHLO {name}")
        assert reply.startswith("250 "), reply
        return reply

    async def silent_for(self, seconds: float) -> bool:
        """True when the server sends nothing for `seconds`."""
        try:
            async with asyncio.timeout(seconds):
                data = await self.reader.read(1)
        except TimeoutError:
            return True
        raise AssertionError(f"unexpected data from the server: {data!r}")

    async def transaction(self, sender: str, recipients: list[str], wire: bytes, mail_parameters: str = "") -> str:
        """MAIL, RCPTs, DATA with `wire` (already dot-stuffed) and CRLF.CRLF; the reply to the first
        refused step, else the reply to the end of data."""
        reply = await self.command(f"MAIL FROM:{sender}{mail_parameters}")
        if not reply.startswith("250"):
            return reply
        for recipient in recipients:
            reply = await self.command(f"RCPT TO:{recipient}")
            if not reply.startswith("250"):
                await self.command("RSET")
                return reply
        reply = await self.command("DATA")
        if not reply.startswith("354"):
            return reply
        await self.send(wire + b".\r\n")
        return await self.reply()

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except ConnectionError:
            pass
