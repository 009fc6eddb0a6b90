"""Lockouts stay in bounded memory without being wiped: rotating usernames or addresses cannot evict them.

Client addresses and usernames are separate tables; only usernames of the users file are
counted, and a full client table forgets aged-out, then unlocked entries before any lockout
(kubemta_ingress.auth_limits). Over real SMTP from loopback addresses 127.0.0.x, and the
table's eviction order directly, fuzzed with hypothesis.
"""

import asyncio
import base64
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session
from hypothesis import given, settings
from hypothesis import strategies as st

from kubemta_ingress import auth
from kubemta_ingress.auth import AuthRefusal, PendingCheck, UsersAuthenticator
from kubemta_ingress.auth_limits import FailureLimiter
from kubemta_ingress.server import SessionOptions
from kubemta_ingress.users import User, UsersFile, hash_password, render
from tests.harness.ingress_kit import RawClient, Servers

PASSWORD = "s3cret-pass"
CHEAP_HASH = hash_password(PASSWORD, log2_n=10)
LOCKED = "421 4.7.0 Too many failed authentication attempts"
FAILED = "535 5.7.8 Authentication credentials invalid"

type Start = Callable[..., Awaitable[tuple[int, UsersAuthenticator]]]


@pytest.fixture
def start(servers: Servers, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, auth_in_clear_text: None) -> Start:
    """A server with AUTH in clear text (tests only) and an authenticator built with `settings`."""

    async def run(**settings: Any) -> tuple[int, UsersAuthenticator]:
        path = tmp_path / "users"
        path.write_text(render([User("app", hash_password(PASSWORD, log2_n=10), ())]), encoding="utf-8")
        settings = {"failure_limit": 2, "failure_window": 900.0, "failure_delay": 0.0} | settings
        authenticator = UsersAuthenticator(UsersFile(path), **settings)
        server, _ = await servers.start(options=SessionOptions(authenticator=authenticator), relay_networks=())
        return server.port, authenticator

    return run


async def auth_from(port: int, source: str, user: str, password: str) -> str:
    """One AUTH PLAIN from `source` on a new connection; the reply's last line."""
    client = await RawClient.open(port, local_addr=(source, 0))
    try:
        assert (await client.read_reply())[-1].startswith("220 ")
        assert (await client.last("EHLO client.example")).startswith("250 ")
        credentials = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        return await client.last(f"AUTH PLAIN {credentials}")
    finally:
        await client.close()


async def test_rotating_usernames_and_addresses_does_not_evict_a_lockout(start):
    port, authenticator = await start(max_tracked_clients=4)
    for name in ("admin", "root"):
        assert await auth_from(port, "127.0.0.2", name, "guess") == FAILED
    assert await auth_from(port, "127.0.0.2", "app", PASSWORD) == LOCKED
    # The same address rotating usernames stays locked (nothing is even checked) ...
    for number in range(5):
        assert await auth_from(port, "127.0.0.2", f"user{number}", "guess") == LOCKED
    # ... and 30 other addresses with 30 other usernames overflow the client table many times over.
    for number in range(30):
        assert await auth_from(port, f"127.0.1.{number + 1}", f"name{number}", "guess") == FAILED
        assert len(authenticator.clients) <= 4
    assert await auth_from(port, "127.0.0.2", "app", PASSWORD) == LOCKED
    assert len(authenticator.usernames) == 0  # none of those names exists: none was counted


async def test_unknown_usernames_are_not_counted_known_ones_are(start):
    port, authenticator = await start(failure_limit=3)
    for number in range(20):
        source = f"127.0.2.{number + 1}"  # one failure per address: no address gets locked
        assert await auth_from(port, source, "ghost" if number % 2 else f"ghost{number}", "guess") == FAILED
    assert len(authenticator.usernames) == 0
    assert await auth_from(port, "127.0.2.200", "ghost", "guess") == FAILED  # an unknown name is never locked
    for source in ("127.0.3.1", "127.0.3.2", "127.0.3.3"):
        assert await auth_from(port, source, "app", "guess") == FAILED
    assert len(authenticator.usernames) == 1
    assert await auth_from(port, "127.0.3.4", "app", PASSWORD) == LOCKED  # the account is protected


async def test_a_table_full_of_lockouts_stays_bounded_and_forgets_the_lock_ending_soonest(start):
    """The documented trade-off, when every tracked address is locked: the oldest lock gives way, no other."""
    port, authenticator = await start(max_tracked_clients=4)
    sources = [f"127.0.4.{number}" for number in range(1, 6)]
    for source in sources[:4]:
        for _ in range(2):
            assert await auth_from(port, source, "nobody", "guess") == FAILED
    assert all(authenticator.clients.locked(source) for source in sources[:4])
    assert await auth_from(port, sources[4], "nobody", "guess") == FAILED  # a fifth address needs room
    assert len(authenticator.clients) <= 4
    assert not authenticator.clients.locked(sources[0])
    assert all(authenticator.clients.locked(source) for source in sources[1:4])
    assert await auth_from(port, sources[1], "app", PASSWORD) == LOCKED


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_room_is_made_from_expired_then_unlocked_then_soonest_ending_locks():
    clock = Clock()
    limiter = FailureLimiter(limit=2, window=100.0, max_keys=5, clock=clock)
    limiter.record("expired")
    clock.now = 50.0
    for key in ("locked-old", "locked-old", "unlocked-old", "locked-new", "locked-new", "unlocked-new"):
        clock.now += 1.0
        limiter.record(key)
    clock.now = 120.0  # "expired" aged out; the others did not
    limiter.record("a")  # full: the expired key goes (the table is cut to 90%, here 4 keys)
    assert limiter.count("expired") == 0 and limiter.count("unlocked-old") == 1
    limiter.record("b")  # full again: the least recently failed unlocked key goes
    assert limiter.count("unlocked-old") == 0 and limiter.locked("locked-old") and limiter.locked("locked-new")
    assert len(limiter) <= 5
    for key in ("c", "d", "e"):  # each pushes out one more unlocked key, then locks itself
        limiter.record(key)
        limiter.record(key)
    assert all(limiter.locked(key) for key in ("locked-old", "locked-new", "c", "d", "e"))  # full of locks
    limiter.record("f")  # only now does a lock give way: the one ending soonest
    assert not limiter.locked("locked-old")
    assert all(limiter.locked(key) for key in ("locked-new", "c", "d", "e")) and limiter.count("f") == 1
    assert len(limiter) <= 5


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(min_value=0, max_value=30), st.floats(min_value=0.0, max_value=40.0)),
        max_size=200,
    ),
    st.integers(min_value=1, max_value=4),
    st.integers(min_value=1, max_value=12),
)
def test_the_table_is_bounded_and_keeps_locks_while_it_can(
    events: list[tuple[int, float]], limit: int, max_keys: int
) -> None:
    """Any sequence of failures: never more than `max_keys` keys; a lock is lost only when the table is all locks."""
    clock = Clock()
    limiter = FailureLimiter(limit=limit, window=100.0, max_keys=max_keys, clock=clock)
    seen: set[str] = set()
    cut_to = max_keys - max(1, max_keys // 10)
    for key_number, advance in events:
        clock.now += advance
        key = f"k{key_number}"
        locked_before = {other for other in seen if limiter.locked(other)}
        count = limiter.record(key)
        seen.add(key)
        assert len(limiter) <= max_keys
        assert limiter.count(key) == count >= 1
        if len(locked_before - {key}) <= cut_to:
            assert all(limiter.locked(other) for other in locked_before), "a lock was evicted while others could go"


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=300), st.binary(max_size=300))
def test_hostile_credentials_are_refused_cleanly_and_never_counted_as_usernames(login: bytes, password: bytes) -> None:
    """Any bytes as username and password: a 535 (or a success for the real pair), no exception, no username row."""
    with (
        tempfile.TemporaryDirectory() as directory,
        mock.patch.object(auth, "verify_password", lambda *_: False),
        mock.patch.object(auth, "hash_password", lambda _: CHEAP_HASH),  # the dummy hash, cheaply
    ):
        path = Path(directory) / "users"
        path.write_text(render([User("app", CHEAP_HASH, ())]), encoding="utf-8")
        authenticator = UsersAuthenticator(UsersFile(path), failure_limit=1000, failure_window=900.0, failure_delay=0.0)

        async def attempt() -> AuthResult:
            session = Session(asyncio.get_running_loop())
            session.peer = ("192.0.2.1", 25)  # type: ignore[assignment]  # aiosmtpd stores the peername
            first = authenticator(mock.Mock(), session, Envelope(), "PLAIN", LoginPassword(login, password))
            assert isinstance(first.auth_data, PendingCheck)
            return await authenticator.check(first.auth_data)

        result = asyncio.run(attempt())
        assert not result.success and result.message == FAILED and isinstance(result.auth_data, AuthRefusal)
        assert len(authenticator.usernames) == (1 if login == b"app" else 0)
        assert authenticator.clients.count("192.0.2.1") == 1
