"""The service process' main coroutine: it serves SMTP while the broker is unreachable
(answering 451, never 250), reports not-ready, and stops cleanly; bad config exits with 2."""

import asyncio
import socket

import pytest

from kubemta_ingress.__main__ import main, serve

IO_TIMEOUT = 5.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def http_get(port: int, path: str) -> tuple[int, bytes]:
    async with asyncio.timeout(IO_TIMEOUT):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n".encode())
        response = await reader.read()
        writer.close()
        await writer.wait_closed()
    status_line, _, rest = response.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


async def connect_when_listening(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    async with asyncio.timeout(IO_TIMEOUT):
        while True:
            try:
                return await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.05)


async def test_smtp_serves_while_the_broker_is_unreachable(monkeypatch, restore_logging):
    smtp_port, http_port = free_port(), free_port()
    for name, value in {
        "KUBEMTA_AMQP_URL": "amqp://guest:guest@127.0.0.1:1/",
        "KUBEMTA_AMQP_RECONNECT_INTERVAL": "0.1s",
        "KUBEMTA_SMTP_LISTEN": f"127.0.0.1:{smtp_port}",
        "KUBEMTA_METRICS_LISTEN": f"127.0.0.1:{http_port}",
        "KUBEMTA_HTTP_LISTEN": f"127.0.0.1:{free_port()}",
        "KUBEMTA_HOSTNAME": "mx.kubemta.test",
        "KUBEMTA_DRAIN_SECONDS": "1s",
    }.items():
        monkeypatch.setenv(name, value)
    stop = asyncio.Event()
    service = asyncio.create_task(serve(stop))
    try:
        reader, writer = await connect_when_listening(smtp_port)
        replies = []
        async with asyncio.timeout(IO_TIMEOUT):
            for line in (None, b"EHLO client.example", b"MAIL FROM:<a@example.net>", b"RCPT TO:<b@example.org>"):
                if line is not None:
                    writer.write(line + b"\r\n")
                while (reply := (await reader.readline()).decode())[3:4] == "-":
                    pass
                replies.append(reply.rstrip())
            writer.write(b"DATA\r\n")
            assert (await reader.readline()).startswith(b"354 ")
            writer.write(b"Subject: x\r\n\r\nbody\r\n.\r\n")
            replies.append((await reader.readline()).decode().rstrip())
        assert replies[0] == "220 mx.kubemta.test ESMTP kubemta"
        assert replies[-1] == "451 4.3.0 Error: queue unavailable, try again later"
        assert await http_get(http_port, "/healthz") == (200, b'{"status":"ok"}')
        assert (await http_get(http_port, "/readyz"))[0] == 503
        status, metrics = await http_get(http_port, "/metrics")
        assert status == 200
        assert b'kubemta_messages_rejected_total{reason="queue_unavailable"}' in metrics
        assert b"kubemta_smtp_sessions_total" in metrics
    finally:
        stop.set()
        async with asyncio.timeout(IO_TIMEOUT):
            await service
    # The session was closed with 421 when the service stopped.
    async with asyncio.timeout(IO_TIMEOUT):
        assert (await reader.read()).startswith(b"421 4.3.2 ")
    writer.close()
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", smtp_port)


def test_invalid_configuration_exits_with_a_message(monkeypatch, capsys, restore_logging):
    monkeypatch.setenv("KUBEMTA_MAX_RECIPIENTS", "0")
    monkeypatch.setenv("KUBEMTA_RELAY_NETWORKS", "10.0.0.0/8,not-a-network")
    monkeypatch.setattr("sys.argv", ["kubemta-ingress"])
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 2
    error = capsys.readouterr().err
    assert "KUBEMTA_MAX_RECIPIENTS" in error and "KUBEMTA_RELAY_NETWORKS" in error
