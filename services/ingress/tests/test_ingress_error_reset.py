"""The error limit counts errors since the last queued message: a client that makes a few mistakes,
queues a message, and makes a few more is not cut off, with a real SMTP client (smtplib) against the
real server."""

import asyncio
import smtplib

from kubemta_ingress.limits import SessionLimits
from kubemta_ingress.server import SessionOptions
from tests.harness.ingress_kit import IO_TIMEOUT, Servers

MAX_ERRORS = 3
MESSAGE = b"From: a@example.net\r\nTo: user@example.org\r\nSubject: hi\r\n\r\nhello\r\n"


async def test_a_queued_message_starts_the_error_count_again(servers: Servers, metrics) -> None:
    server, publisher = await servers.start(options=SessionOptions(session_limits=SessionLimits(max_errors=MAX_ERRORS)))
    too_many_before = metrics.rejected("too_many_errors")

    def session() -> list[object]:
        said: list[object] = []
        client = smtplib.SMTP("127.0.0.1", server.port, timeout=IO_TIMEOUT)
        try:
            client.ehlo("client.example")
            for _ in range(MAX_ERRORS - 1):  # one short of the limit
                said.append(client.docmd("BOGUS")[0])
            said.append(client.sendmail("a@example.net", ["user@example.org"], MESSAGE))
            for _ in range(MAX_ERRORS - 1):  # the limit would be passed, were the count not reset
                said.append(client.docmd("BOGUS")[0])
            said.append(client.noop()[0])
            said.append(client.sendmail("a@example.net", ["user@example.org"], MESSAGE))
            client.quit()
        except (smtplib.SMTPServerDisconnected, ConnectionError):
            said.append("disconnected")
        finally:
            client.close()
        return said

    said = await asyncio.to_thread(session)

    # each sendmail() says {} (every recipient accepted); a cut-off session would end in "disconnected"
    assert said == [500] * (MAX_ERRORS - 1) + [{}] + [500] * (MAX_ERRORS - 1) + [250, {}]
    assert len(publisher.published) == 2
    assert metrics.rejected("too_many_errors") == too_many_before


async def test_errors_without_a_queued_message_still_reach_the_limit(servers: Servers, metrics) -> None:
    server, publisher = await servers.start(options=SessionOptions(session_limits=SessionLimits(max_errors=MAX_ERRORS)))
    too_many_before = metrics.rejected("too_many_errors")

    def session() -> tuple[list[int], int]:
        codes: list[int] = []
        with smtplib.SMTP("127.0.0.1", server.port, timeout=IO_TIMEOUT) as client:
            client.ehlo("client.example")
            for _ in range(MAX_ERRORS):
                codes.append(client.docmd("BOGUS")[0])
            last = client.getreply()[0]  # the 421 that follows the error that reached the limit
        return codes, last

    codes, last = await asyncio.to_thread(session)

    assert codes == [500] * MAX_ERRORS
    assert last == 421
    assert publisher.attempts == 0
    assert metrics.rejected("too_many_errors") == too_many_before + 1
