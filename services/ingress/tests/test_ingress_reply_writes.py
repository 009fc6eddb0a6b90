"""How the ingress writes its replies: a multi-line reply (EHLO's) in one write with its last line, not one write
(and one TCP segment the client wakes up for) per line; what the client reads is unchanged."""

import asyncio

import pytest

from tests.harness.ingress_kit import RawClient, Servers


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every StreamWriter.write of the test's process (the server's replies and the client's commands)."""
    written: list[bytes] = []
    original = asyncio.StreamWriter.write

    def write(self: asyncio.StreamWriter, data: bytes | bytearray | memoryview) -> None:
        written.append(bytes(data))
        original(self, data)

    monkeypatch.setattr(asyncio.StreamWriter, "write", write)
    return written


def replies(writes: list[bytes]) -> list[bytes]:
    """The server's writes (each starts with a reply code)."""
    return [data for data in writes if data[:3].isdigit()]


async def test_the_ehlo_reply_is_one_write(servers: Servers, writes: list[bytes]) -> None:
    server, _ = await servers.start()
    client = await RawClient.open(server.port)
    client.greeting = await client.read_reply()
    lines = await client.command("EHLO client.example")
    assert len(lines) > 3 and all(line.startswith("250-") for line in lines[:-1]) and lines[-1].startswith("250 ")
    ehlo = [data for data in replies(writes) if data.startswith(b"250-")]
    assert ehlo == [("\r\n".join(lines) + "\r\n").encode()]
    await client.close()


async def test_single_line_replies_and_a_transaction_after_ehlo(servers: Servers, writes: list[bytes]) -> None:
    server, publisher = await servers.start()
    client = await RawClient.open(server.port)
    client.greeting = await client.read_reply()
    await client.command("EHLO client.example")
    assert await client.last("MAIL FROM:<a@example.net>") == "250 2.1.0 Ok"
    assert await client.last("RCPT TO:<b@example.org>") == "250 2.1.5 Ok"
    assert (await client.last("DATA")).startswith("354 ")
    await client.send(b"Subject: s\r\n\r\nHi.\r\n.\r\n")
    assert (await client.read_reply())[-1].startswith("250 2.0.0 Ok: queued as ")
    assert await client.last("QUIT") == "221 2.0.0 Bye"
    assert len(publisher.published) == 1
    # greeting, EHLO, MAIL, RCPT, DATA, the queued reply and QUIT: one write each
    assert len(replies(writes)) == 7, replies(writes)
    await client.close()


async def test_helo_is_answered_in_one_line(servers: Servers, writes: list[bytes]) -> None:
    server, _ = await servers.start()
    client = await RawClient.open(server.port)
    client.greeting = await client.read_reply()
    assert await client.command("HELO client.example") == ["250 mx.kubemta.test"]
    assert replies(writes)[-1] == b"250 mx.kubemta.test\r\n"
    await client.close()
