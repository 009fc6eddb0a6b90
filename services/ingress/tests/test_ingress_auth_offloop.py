"""AUTH checks passwords off the event loop, in a bounded pool, without letting parallel guesses overshoot.

The proof of "off the loop" takes no timing: the password check is replaced by one that blocks
its thread until a coroutine on the event loop releases it. Run on the loop, nothing could
release it (the wait gives up after BLOCK_BOUND and the login fails); run on a thread, the loop
goes on, other sessions get their replies, and the coroutine releases it.
"""

import asyncio
import base64
import smtplib
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from kubemta_ingress import auth
from kubemta_ingress.auth import UsersAuthenticator, build_authenticator
from kubemta_ingress.server import SessionOptions
from kubemta_ingress.settings import IngressSettings
from kubemta_ingress.users import Identity, User, UsersFile, hash_password, render, verify_password
from tests.harness.ingress_kit import IO_TIMEOUT, RawClient, Servers, eventually

PASSWORD = "s3cret-pass"
BLOCK_BOUND = 10.0  # seconds a blocked check waits for its release before giving up (failing the login)


class BlockingVerify:
    """A stand-in for verify_password that blocks its thread until `release` is set (bounded)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self._lock = threading.Lock()
        self.calls = 0
        self.stored: list[str] = []

    def __call__(self, password: bytes, stored: str) -> bool:
        with self._lock:
            self.calls += 1
            self.stored.append(stored)
        if not self.release.wait(BLOCK_BOUND):
            return False  # nobody released it: the event loop was blocked (the check ran on it)
        return verify_password(password, stored)


@pytest.fixture
def blocking_verify(monkeypatch: pytest.MonkeyPatch) -> BlockingVerify:
    verify = BlockingVerify()
    monkeypatch.setattr(auth, "verify_password", verify)
    return verify


type Start = Callable[..., Awaitable[tuple[int, UsersAuthenticator]]]


@pytest.fixture
def start(servers: Servers, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, auth_in_clear_text: None) -> Start:
    """Start a server whose AUTH (allowed in clear text, tests only) uses an authenticator built with `settings`."""

    async def run(from_environment: bool = False, **settings: Any) -> tuple[int, UsersAuthenticator]:
        """`from_environment`: built by the service's own build_authenticator from KUBEMTA_* variables."""
        path = tmp_path / "users"
        users = [
            User(name, hash_password(PASSWORD, log2_n=10), (Identity.parse(f"{name}@example.com"),))
            for name in ("app", "other")
        ]
        path.write_text(render(users), encoding="utf-8")
        if from_environment:
            monkeypatch.setenv("KUBEMTA_USERS_FILE", str(path))
            built = build_authenticator(IngressSettings())
            assert isinstance(built, UsersAuthenticator)
            authenticator = built
        else:
            settings = {"failure_limit": 5, "failure_window": 900.0, "failure_delay": 0.0} | settings
            authenticator = UsersAuthenticator(UsersFile(path), **settings)
        server, _ = await servers.start(options=SessionOptions(authenticator=authenticator), relay_networks=())
        return server.port, authenticator

    return run


def plain(user: str, password: str) -> str:
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


def smtplib_auth(port: int, user: str, password: str, source: str = "127.0.0.1") -> int:
    """AUTH PLAIN with smtplib in its own thread; the reply code (-1: disconnected)."""
    with smtplib.SMTP("127.0.0.1", port, timeout=BLOCK_BOUND + IO_TIMEOUT, source_address=(source, 0)) as client:
        client.ehlo("client.example")
        client.user, client.password = user, password
        try:
            code, _ = client.auth("PLAIN", client.auth_plain)
        except smtplib.SMTPAuthenticationError as exc:
            return exc.smtp_code
        except smtplib.SMTPServerDisconnected:
            return -1
        return code


async def auth_in_thread(port: int, user: str, password: str, source: str = "127.0.0.1") -> "asyncio.Task[int]":
    return asyncio.create_task(asyncio.to_thread(smtplib_auth, port, user, password, source))


async def test_the_password_check_runs_off_the_event_loop(start, blocking_verify):
    port, _ = await start()
    login = await auth_in_thread(port, "app", PASSWORD)
    await eventually(lambda: blocking_verify.calls == 1)  # the check is running, somewhere
    blocking_verify.release.set()  # only possible while the event loop runs: the check is not on it
    async with asyncio.timeout(BLOCK_BOUND + IO_TIMEOUT):
        assert await login == 235


async def test_other_sessions_get_replies_while_a_check_is_blocked(start, blocking_verify):
    port, _ = await start()
    login = await auth_in_thread(port, "app", PASSWORD)
    await eventually(lambda: blocking_verify.calls == 1)
    other = await RawClient.open(port)
    try:
        assert (await other.read_reply())[-1].startswith("220 ")
        assert (await other.last("EHLO second.example")).startswith("250 ")
        assert await other.last("NOOP") == "250 2.0.0 OK"
        await other.send(f"AUTH PLAIN {plain('other', 'wrong')}\r\n".encode())
        await eventually(lambda: blocking_verify.calls == 2)  # both checks blocked at once, on two threads
        assert not login.done()  # all of that happened while the first check was still blocked
        blocking_verify.release.set()
        assert (await other.read_reply(BLOCK_BOUND + IO_TIMEOUT))[-1] == "535 5.7.8 Authentication credentials invalid"
    finally:
        blocking_verify.release.set()
        await other.close()
    async with asyncio.timeout(BLOCK_BOUND + IO_TIMEOUT):
        assert await login == 235


async def test_unknown_users_are_checked_too(start, blocking_verify):
    """Against a dummy hash at the default cost, so an unknown name takes as long as a known one."""
    port, _ = await start()
    blocking_verify.release.set()
    assert await asyncio.to_thread(smtplib_auth, port, "nobody", PASSWORD) == 535
    assert blocking_verify.calls == 1 and blocking_verify.stored[0].startswith("$scrypt$ln=14,")


async def test_over_the_bound_auth_gets_454_and_counts_no_failure(start, blocking_verify, metrics):
    port, authenticator = await start(verify_threads=1, verify_queue=1, failure_limit=3)
    busy = metrics.value("kubemta_auth_attempts_total", result="busy")
    running = await auth_in_thread(port, "app", PASSWORD)
    await eventually(lambda: blocking_verify.calls == 1)
    waiting = await auth_in_thread(port, "app", PASSWORD)
    await eventually(lambda: authenticator.pending_checks == 2)  # one on the thread, one queued for it
    flood = [await connect(port) for _ in range(3)]
    for client in flood:  # RFC 4954 section 6: a temporary failure, answered at once
        assert await client.last(f"AUTH PLAIN {plain('app', PASSWORD)}") == "454 4.7.0 Temporary authentication failure"
    assert blocking_verify.calls == 1  # nothing more was queued
    assert metrics.value("kubemta_auth_attempts_total", result="busy") == busy + 3
    blocking_verify.release.set()
    async with asyncio.timeout(BLOCK_BOUND + IO_TIMEOUT):
        assert (await running, await waiting) == (235, 235)
    # The refused attempts were no failures (three would have locked client and user): the client may retry.
    assert await flood[0].last(f"AUTH PLAIN {plain('app', PASSWORD)}") == "235 2.7.0 Authentication successful"
    for client in flood:
        await client.close()


async def test_the_bounds_are_settings(start, blocking_verify, monkeypatch):
    """KUBEMTA_AUTH_VERIFY_THREADS, KUBEMTA_AUTH_VERIFY_QUEUE and KUBEMTA_AUTH_MAX_TRACKED_CLIENTS reach the service."""
    monkeypatch.setenv("KUBEMTA_AUTH_VERIFY_THREADS", "1")
    monkeypatch.setenv("KUBEMTA_AUTH_VERIFY_QUEUE", "0")
    monkeypatch.setenv("KUBEMTA_AUTH_MAX_TRACKED_CLIENTS", "3")
    port, authenticator = await start(from_environment=True)
    running = await auth_in_thread(port, "app", PASSWORD)
    await eventually(lambda: blocking_verify.calls == 1)
    other = await connect(port, "127.0.0.2")  # one thread, no queue: a second check is refused at once
    assert await other.last(f"AUTH PLAIN {plain('other', PASSWORD)}") == "454 4.7.0 Temporary authentication failure"
    await other.close()
    blocking_verify.release.set()
    async with asyncio.timeout(BLOCK_BOUND + IO_TIMEOUT):
        assert await running == 235
    for number in range(10):
        authenticator.clients.record(f"192.0.2.{number}")
        assert len(authenticator.clients) <= 3


async def connect(port: int, source: str = "127.0.0.1") -> RawClient:
    client = await RawClient.open(port, local_addr=(source, 0))
    assert (await client.read_reply())[-1].startswith("220 ")
    assert (await client.last("EHLO client.example")).startswith("250 ")
    return client


async def test_parallel_guesses_cannot_overshoot_the_limit(start, blocking_verify):
    """Ten connections from one address guess at once: three are checked (the limit), seven refused unchecked."""
    port, _ = await start(failure_limit=3, verify_threads=4)
    clients = [await connect(port, "127.0.0.2") for _ in range(10)]
    for number, client in enumerate(clients):
        await client.send(f"AUTH PLAIN {plain(f'guess{number}', 'wrong')}\r\n".encode())
    await eventually(lambda: blocking_verify.calls == 3)
    blocking_verify.release.set()
    replies = [(await client.read_reply(BLOCK_BOUND + IO_TIMEOUT))[-1][:9] for client in clients]
    assert sorted(replies) == ["421 4.7.0"] * 7 + ["535 5.7.8"] * 3
    assert blocking_verify.calls == 3
    for client in clients:
        await client.close()


async def test_parallel_logins_of_one_user_all_succeed(start, blocking_verify):
    """Checks in flight slow nobody down who is not failing: an app's burst of logins is not locked out."""
    port, _ = await start(failure_limit=3, verify_threads=4)
    clients = [await connect(port) for _ in range(8)]
    for client in clients:
        await client.send(f"AUTH PLAIN {plain('app', PASSWORD)}\r\n".encode())
    await eventually(lambda: blocking_verify.calls >= 3)
    blocking_verify.release.set()
    replies = [(await client.read_reply(BLOCK_BOUND + IO_TIMEOUT))[-1] for client in clients]
    assert replies == ["235 2.7.0 Authentication successful"] * 8
    for client in clients:
        await client.close()


async def calls_reach(verify: BlockingVerify, calls: int) -> None:
    await eventually(lambda: verify.calls == calls)


async def test_a_client_leaving_mid_check_still_has_its_failure_counted(start, blocking_verify):
    port, authenticator = await start(failure_limit=2)
    for started in (1, 2):
        client = await connect(port, "127.0.0.3")
        await client.send(f"AUTH PLAIN {plain('app', 'wrong')}\r\n".encode())
        await calls_reach(blocking_verify, started)
        await client.close()  # gone before the answer
    blocking_verify.release.set()
    await eventually(lambda: authenticator.pending_checks == 0)
    assert authenticator.clients.locked("127.0.0.3") and authenticator.usernames.locked("app")
    again = await connect(port, "127.0.0.3")
    assert (
        await again.last(f"AUTH PLAIN {plain('app', PASSWORD)}") == "421 4.7.0 Too many failed authentication attempts"
    )
    await again.close()
