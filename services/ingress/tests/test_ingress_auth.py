"""AUTH PLAIN and LOGIN against the users file, with real clients, and brute-force resistance."""

import asyncio
import base64
import logging
import smtplib
import subprocess
import time

import pytest

from kubemta_ingress.auth import MAX_FAILURE_DELAY, client_key
from kubemta_ingress.auth_limits import FailureLimiter
from tests.harness.ingress_kit import IO_TIMEOUT, RawClient
from tests.harness.tools import swaks

PASSWORD = "s3cret-pass"
USERS = {"app": (PASSWORD, ["app@example.com"]), "other": ("other-pass", ["other@example.com"])}
MESSAGE = b"From: app@example.com\r\nTo: x@other.org\r\nSubject: hi\r\n\r\nhello\r\n"


def plain(user: str, password: str) -> str:
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


async def connect_from(port: int, source: str) -> RawClient:
    """A raw client from `source` (a loopback address), after the greeting and EHLO."""
    client = await RawClient.open(port, local_addr=(source, 0))
    assert (await client.read_reply())[-1].startswith("220 ")
    assert (await client.last("EHLO client.example")).startswith("250 ")
    return client


def smtplib_login(port: int, user: str, password: str, mechanism: str, source: str = "127.0.0.1") -> int:
    """Log in with smtplib's own AUTH implementation; the reply code."""
    with smtplib.SMTP("127.0.0.1", port, timeout=IO_TIMEOUT, source_address=(source, 0)) as client:
        client.ehlo("client.example")
        assert client.has_extn("auth") and {"PLAIN", "LOGIN"} <= set(client.esmtp_features["auth"].split())
        client.user, client.password = user, password
        try:
            code, _ = client.auth(mechanism, getattr(client, f"auth_{mechanism.lower()}"))
        except smtplib.SMTPAuthenticationError as exc:
            return exc.smtp_code
        except smtplib.SMTPServerDisconnected:
            return -1
        return code


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
async def test_smtplib_login_and_send(start_auth_server, metrics, mechanism):
    server = await start_auth_server(users=USERS)
    before = metrics.value("kubemta_auth_attempts_total", result="success")

    def send() -> dict[str, tuple[int, bytes]]:
        with smtplib.SMTP("127.0.0.1", server.port, timeout=IO_TIMEOUT) as client:
            client.ehlo("client.example")
            client.user, client.password = "app", PASSWORD
            code, reply = client.auth(mechanism, getattr(client, f"auth_{mechanism.lower()}"))
            assert (code, reply) == (235, b"2.7.0 Authentication successful")
            return client.sendmail("app@example.com", ["x@other.org"], MESSAGE)

    assert await asyncio.to_thread(send) == {}  # relayed to a foreign domain: authenticated
    assert len(server.publisher.published) == 1
    assert metrics.value("kubemta_auth_attempts_total", result="success") == before + 1


async def test_smtplib_login_picks_a_mechanism(start_auth_server):
    server = await start_auth_server(users=USERS)

    def login() -> tuple[int, bytes]:
        with smtplib.SMTP("127.0.0.1", server.port, timeout=IO_TIMEOUT) as client:
            return client.login("app", PASSWORD)

    assert (await asyncio.to_thread(login))[0] == 235


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
async def test_wrong_credentials_get_535(start_auth_server, metrics, mechanism):
    server = await start_auth_server(users=USERS)
    failures = metrics.value("kubemta_auth_attempts_total", result="failure")
    rejected = metrics.rejected("auth_failed")
    assert await asyncio.to_thread(smtplib_login, server.port, "app", "wrong", mechanism) == 535
    assert await asyncio.to_thread(smtplib_login, server.port, "nobody", PASSWORD, mechanism) == 535
    assert await asyncio.to_thread(smtplib_login, server.port, "other", PASSWORD, mechanism) == 535
    assert metrics.value("kubemta_auth_attempts_total", result="failure") == failures + 3
    assert metrics.rejected("auth_failed") == rejected + 3


async def test_wrong_password_reply_text_and_no_relay_after_it(start_auth_server):
    server = await start_auth_server(users=USERS)
    client = await server.harness.connect()
    assert await client.last(f"AUTH PLAIN {plain('app', 'wrong')}") == "535 5.7.8 Authentication credentials invalid"
    assert (await client.last("MAIL FROM:<app@example.com>")).startswith("250")
    assert await client.last("RCPT TO:<x@other.org>") == "554 5.7.1 <x@other.org>: Relay access denied"


async def test_login_challenges_and_malformed_input(start_auth_server):
    server = await start_auth_server(users=USERS)
    client = await server.harness.connect()
    assert await client.last("AUTH LOGIN") == "334 VXNlcm5hbWU6"  # "Username:" (test_ingress_auth_login.py)
    assert await client.last(base64.b64encode(b"app").decode()) == "334 UGFzc3dvcmQ6"  # "Password:"
    assert (await client.last(base64.b64encode(PASSWORD.encode()).decode())).startswith("235 2.7.0")
    assert (await client.last(f"AUTH PLAIN {plain('app', PASSWORD)}")).startswith("503")  # RFC 4954 section 4
    other = await server.harness.connect()
    assert (await other.last("AUTH PLAIN !!!notbase64")).startswith("501")
    assert (await other.last("AUTH PLAIN " + base64.b64encode(b"no-nul-separators").decode())).startswith("501")
    assert (await other.last("AUTH CRAM-MD5")).startswith("504")
    assert (await other.last("AUTH PLAIN")) == "334 "
    assert (await other.last("*")).startswith("501")  # RFC 4954 section 4: client cancels
    assert (await other.last("NOOP")).startswith("250")
    assert (await other.last("MAIL FROM:<s@remote.test>")).startswith("250")
    assert await other.last(f"AUTH PLAIN {plain('app', PASSWORD)}") == "503 5.5.1 Error: MAIL transaction in progress"


async def test_swaks_auth_plain_and_login(start_auth_server):
    server = await start_auth_server(users=USERS)
    for mechanism in ("PLAIN", "LOGIN"):
        result = await asyncio.to_thread(
            subprocess.run,
            [swaks(), "--server", "127.0.0.1", "--port", str(server.port), "--from", "app@example.com",
             "--to", "x@other.org", "--header", "From: app@example.com", "--auth", mechanism,
             "--auth-user", "app", "--auth-password", PASSWORD, "--timeout", "10"],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        assert "235 2.7.0 Authentication successful" in result.stdout
        assert "250 2.0.0 Ok: queued as" in result.stdout
    assert len(server.publisher.published) == 2
    wrong = await asyncio.to_thread(
        subprocess.run,
        [swaks(), "--server", "127.0.0.1", "--port", str(server.port), "--from", "app@example.com",
         "--to", "x@other.org", "--auth", "PLAIN", "--auth-user", "app", "--auth-password", "nope",
         "--timeout", "10"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert wrong.returncode != 0
    assert "535 5.7.8 Authentication credentials invalid" in wrong.stdout
    assert len(server.publisher.published) == 2


async def test_failures_are_delayed_more_each_time(start_auth_server):
    server = await start_auth_server(users=USERS, failure_delay=0.2, failure_limit=10)
    client = await server.harness.connect()
    elapsed = []
    for _ in range(3):
        started = time.monotonic()
        assert (await client.last(f"AUTH PLAIN {plain('app', 'wrong')}")).startswith("535 5.7.8")
        elapsed.append(time.monotonic() - started)
    assert 0.2 <= elapsed[0] < 0.4
    assert 0.4 <= elapsed[1] < 0.6
    assert 0.6 <= elapsed[2] < 0.8
    started = time.monotonic()
    assert (await client.last(f"AUTH PLAIN {plain('app', PASSWORD)}")).startswith("235")
    assert time.monotonic() - started < 0.2  # success is not delayed


async def test_lockout_after_the_limit_then_421_and_close(start_auth_server, metrics):
    server = await start_auth_server(users=USERS, failure_limit=3, failure_window=60.0)
    locked = metrics.value("kubemta_auth_attempts_total", result="locked")
    rejected = metrics.rejected("auth_locked")
    client = await server.harness.connect()
    for _ in range(3):
        assert (await client.last(f"AUTH PLAIN {plain('app', 'wrong')}")).startswith("535 5.7.8")
    assert await client.last(f"AUTH PLAIN {plain('app', PASSWORD)}") == (
        "421 4.7.0 Too many failed authentication attempts"
    )
    assert await client.until_closed() == b""
    # A new connection from the same IP is refused too, even with the right password ...
    again = await server.harness.connect()
    assert (await again.last(f"AUTH PLAIN {plain('other', 'other-pass')}")).startswith("421 4.7.0")
    assert await again.until_closed() == b""
    assert metrics.value("kubemta_auth_attempts_total", result="locked") == locked + 2
    assert metrics.rejected("auth_locked") == rejected + 2
    # ... until the failures age out of the window.
    server.clock.now += 61.0
    fresh = await server.harness.connect()
    assert (await fresh.last(f"AUTH PLAIN {plain('app', PASSWORD)}")).startswith("235")


async def test_lockout_per_username_across_client_addresses(start_auth_server):
    server = await start_auth_server(users=USERS, failure_limit=3)
    for source in ("127.0.0.2", "127.0.0.3", "127.0.0.2"):
        code = await asyncio.to_thread(smtplib_login, server.port, "app", "guess", "LOGIN", source)
        assert code == 535
    # The username is locked, whatever the address and even with the right password (smtplib: 421).
    assert await asyncio.to_thread(smtplib_login, server.port, "app", PASSWORD, "PLAIN", "127.0.0.4") in (421, -1)
    client = await connect_from(server.port, "127.0.0.5")
    assert await client.last(f"AUTH PLAIN {plain('app', PASSWORD)}") == (
        "421 4.7.0 Too many failed authentication attempts"
    )
    assert await client.until_closed() == b""
    await client.close()
    # Another user from those addresses is not affected (neither address reached the limit).
    assert await asyncio.to_thread(smtplib_login, server.port, "other", "other-pass", "PLAIN", "127.0.0.3") == 235


async def test_lockout_per_client_address_across_usernames(start_auth_server):
    server = await start_auth_server(users=USERS, failure_limit=3)
    attacker = await connect_from(server.port, "127.0.0.2")
    for name in ("admin", "root", "info"):
        assert (await attacker.last(f"AUTH PLAIN {plain(name, 'guess')}")).startswith("535")
    assert (await attacker.last(f"AUTH PLAIN {plain('app', PASSWORD)}")).startswith("421 4.7.0")
    assert await attacker.until_closed() == b""
    attacker_again = await connect_from(server.port, "127.0.0.2")
    assert (await attacker_again.last(f"AUTH PLAIN {plain('app', PASSWORD)}")).startswith("421 4.7.0")
    bystander = await connect_from(server.port, "127.0.0.3")
    assert (await bystander.last(f"AUTH PLAIN {plain('app', PASSWORD)}")).startswith("235")
    for client in (attacker, attacker_again, bystander):
        await client.close()


async def test_success_clears_the_username_failures(start_auth_server):
    server = await start_auth_server(users=USERS, failure_limit=3)
    first = await connect_from(server.port, "127.0.0.2")
    for _ in range(2):
        assert (await first.last(f"AUTH PLAIN {plain('app', 'typo')}")).startswith("535")
    assert (await first.last(f"AUTH PLAIN {plain('app', PASSWORD)}")).startswith("235")
    second = await connect_from(server.port, "127.0.0.3")
    for _ in range(2):
        assert (await second.last(f"AUTH PLAIN {plain('app', 'typo')}")).startswith("535")
    assert (await second.last(f"AUTH PLAIN {plain('app', PASSWORD)}")).startswith("235")
    for client in (first, second):
        await client.close()


async def test_passwords_are_never_logged(start_auth_server, caplog):
    server = await start_auth_server(users=USERS)
    caplog.set_level(logging.DEBUG)
    client = await server.harness.connect()
    wrong = "Wr0ngPassw0rd!"
    assert (await client.last(f"AUTH PLAIN {plain('app', wrong)}")).startswith("535")
    assert (await client.last("AUTH LOGIN")).startswith("334")
    assert (await client.last(base64.b64encode(b"app").decode())).startswith("334")
    assert (await client.last(base64.b64encode(PASSWORD.encode()).decode())).startswith("235")
    text = caplog.text + "".join(str(record.__dict__) for record in caplog.records)
    for secret in (wrong, PASSWORD, plain("app", wrong), base64.b64encode(PASSWORD.encode()).decode()):
        assert secret not in text
    assert "'username': 'app'" in text and "'client': '127.0.0.1'" in text


async def test_users_file_changes_apply_without_restart(start_auth_server):
    server = await start_auth_server(users=USERS)
    text = server.users_file.read_text(encoding="utf-8")
    server.users_file.write_text("\n".join(line for line in text.splitlines() if not line.startswith("app:")) + "\n")
    server.clock.now += 10.0
    assert await asyncio.to_thread(smtplib_login, server.port, "app", PASSWORD, "PLAIN") == 535
    assert await asyncio.to_thread(smtplib_login, server.port, "other", "other-pass", "PLAIN") == 235


def test_failure_limiter_window_and_memory_bound():
    now = [0.0]
    limiter = FailureLimiter(limit=2, window=10.0, max_keys=100, clock=lambda: now[0])
    assert limiter.record("a") == 1
    now[0] = 5.0
    assert limiter.record("a") == 2 and limiter.locked("a")
    now[0] = 10.5  # the first failure aged out
    assert limiter.count("a") == 1 and not limiter.locked("a")
    now[0] = 30.0
    assert limiter.count("a") == 0
    limiter.record("b")
    limiter.clear("b")
    assert limiter.count("b") == 0
    assert MAX_FAILURE_DELAY <= 10.0


def test_client_key_groups_ipv6_by_64():
    import ipaddress

    assert client_key(ipaddress.ip_address("2001:db8::1")) == client_key(ipaddress.ip_address("2001:db8::ffff:1"))
    assert client_key(ipaddress.ip_address("2001:db8:0:1::1")) != client_key(ipaddress.ip_address("2001:db8::1"))
    assert client_key(ipaddress.ip_address("192.0.2.1")) == "192.0.2.1"
    assert client_key(None) == "unknown"
