"""The per-message shortcuts of the SMTP client read and write exactly what the long ways do: the
one-line reply parse, the cached address quoting, the per-attempt options, the destination slot taken
without a timer, the attempt counter's cached children, and the idle cache's one timer."""

import asyncio
import dataclasses
import ssl
from collections.abc import Callable

import pytest
from aiosmtplib import SMTPResponseException
from aiosmtplib.email import quote_address
from pydantic import SecretStr

from kubemta.v1 import message_pb2
from kubemta_delivery_worker import wire
from kubemta_delivery_worker.attempt_limits import AttemptDeadline
from kubemta_delivery_worker.deliverer import Deliverer
from kubemta_delivery_worker.destinations import Destinations
from kubemta_delivery_worker.pool import ConnectionKey, ConnectionPool
from kubemta_delivery_worker.relay_auth import RelayCredentials
from kubemta_delivery_worker.smtp_options import SmtpOptions


def parse_all(data: bytes) -> list[tuple[int, str]]:
    reader = wire._ReplyReader(asyncio.Protocol())
    reader.data_received(data)
    replies = []
    while (reply := reader._parse()) is not None:
        replies.append((reply.code, reply.message))
    return replies


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"250 2.0.0 Ok: queued as X\r\n", [(250, "2.0.0 Ok: queued as X")]),
        (b"250 Ok \t\r\n354 go\r\n", [(250, "Ok"), (354, "go")]),
        (b"250-one\r\n250 two\r\n", [(250, "one\ntwo")]),
        (b"250\r\n", [(250, "")]),
        (b"550 5.1.1 caf\xc3\xa9\n", [(550, "5.1.1 café")]),
        (b"250 partial", []),
        (b"250-one\r\n", []),
    ],
)
def test_replies_parse_as_before(data: bytes, expected: list[tuple[int, str]]):
    assert parse_all(data) == expected


@pytest.mark.parametrize("data", [b"2x0 what\r\n", b"250 " + b"x" * 8200 + b"\r\n", b"x" * (8192 * 4 + 1)])
def test_malformed_and_oversized_replies_are_refused(data: bytes):
    with pytest.raises(SMTPResponseException):
        parse_all(data)


def test_command_lines_quote_as_aiosmtplib_and_refuse_what_it_refuses():
    for _ in range(2):  # the second time from the cache
        assert wire.command_line(b"RCPT TO:", "bé@dest.test", [], "utf-8") == (
            b"RCPT TO:" + quote_address("bé@dest.test").encode("utf-8") + b"\r\n"
        )
        with pytest.raises(ValueError):
            wire.command_line(b"RCPT TO:", "bé@dest.test", [], "ascii")


async def test_options_for_an_attempt_keep_every_setting():
    options = SmtpOptions(
        ehlo_name="worker.test",
        tls_context=ssl.create_default_context(),
        connect_timeout=1.0,
        command_timeout=2.0,
        data_timeout=3.0,
        verify_tls_context=ssl.create_default_context(),
        relay_credentials=RelayCredentials("user", SecretStr("secret")),
        pipelining=False,
    )
    with AttemptDeadline(60.0) as deadline:
        assert options.for_attempt(deadline) == dataclasses.replace(options, deadline=deadline)


async def test_a_free_slot_is_taken_and_a_full_destination_still_waits_and_defers():
    destinations = Destinations(concurrency=1, backoff_seconds=60.0, wait_seconds=0.05)
    async with destinations.slot("dest.test"):
        with pytest.raises(Exception, match="already running"):
            async with destinations.slot("dest.test"):
                pass
    async with destinations.slot("dest.test"):
        pass


async def test_attempts_are_counted_per_outcome(refused_host, job, options, metric):
    deferred = metric("kubemta_delivery_attempts_total", result="deferred")

    results = await Deliverer(options).deliver(job([refused_host("mx1.dest.test")], ["a@dest.test", "b@dest.test"]))

    assert [r.outcome for r in results] == [message_pb2.OUTCOME_TEMPORARY] * 2
    assert metric("kubemta_delivery_attempts_total", result="deferred") == deferred + 2


class _Idle:
    def __init__(self) -> None:
        self.is_connected = True
        self.quits = 0

    async def quit(self) -> None:
        self.quits += 1
        self.is_connected = False


async def test_the_idle_cache_runs_one_timer_set_for_the_oldest_connection(monkeypatch: pytest.MonkeyPatch):
    now = [100.0]
    pool: ConnectionPool[_Idle] = ConnectionPool(idle_seconds=5, per_host=4, total=8, clock=lambda: now[0])
    armed: list[tuple[float, Callable[[], None]]] = []
    loop = asyncio.get_running_loop()

    def capture(delay: float, callback: Callable[[], None], *args: object, **kwargs: object) -> asyncio.TimerHandle:
        armed.append((delay, callback))
        return asyncio.TimerHandle(loop.time() + 3600, lambda: None, (), loop)

    monkeypatch.setattr(loop, "call_later", capture)
    first, second, third = _Idle(), _Idle(), _Idle()
    pool.put(ConnectionKey("127.0.0.1", 25), first)
    now[0] += 3
    pool.put(ConnectionKey("127.0.0.2", 25), second)
    pool.put(ConnectionKey("127.0.0.2", 25), third)
    assert [delay for delay, _ in armed] == [5], "one timer, for the first connection's expiry"

    now[0] += 2  # the first connection's idle time is up
    armed.pop()[1]()
    await asyncio.sleep(0)
    assert (first.quits, second.quits, third.quits) == (1, 0, 0)
    assert len(pool) == 2
    assert [delay for delay, _ in armed] == [3], "set again for the next to expire"

    now[0] += 3
    armed.pop()[1]()
    await asyncio.sleep(0)
    assert (second.quits, third.quits) == (1, 1)
    assert len(pool) == 0
    assert armed == [], "nothing idle: no timer"
