"""TLS on the listeners: STARTTLS on the MX listener, the submission listener's demands, implicit TLS,
TLS 1.2 as the floor, certificate rotation without dropping sessions, and STARTTLS hardening
(pipelined commands discarded, no second STARTTLS). Real clients: smtplib, swaks, raw sockets."""

import asyncio
import shutil
import smtplib
import ssl
import warnings
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from kubemta_ingress.auth import UsersAuthenticator
from kubemta_ingress.listeners import ListenerKind, ListenerPolicy
from kubemta_ingress.server import SessionOptions, SmtpServer
from kubemta_ingress.tls import TlsContextStore, build_server_context
from kubemta_ingress.users import Identity, User, UsersFile, hash_password, render
from tests.harness.fake_publisher import FakePublisher
from tests.harness.ingress_kit import (
    IO_TIMEOUT,
    RawClient,
    Servers,
    eventually,
    insecure_client_context,
    only_message,
)
from tests.harness.smtp_peer import make_self_signed_cert
from tests.harness.tools import swaks

MESSAGE = b"From: app@example.org\r\nTo: user@example.org\r\nSubject: tls\r\n\r\nHello.\r\n"


@pytest.fixture
def authenticator(tmp_path: Path) -> Any:
    """The AUTH module's authenticator with one user, app/secret, allowed to send as app@example.org."""
    path = tmp_path / "users"
    user = User("app", hash_password("secret", log2_n=10), (Identity.parse("app@example.org"),))
    path.write_text(render([user]), encoding="utf-8")
    return UsersAuthenticator(UsersFile(path), failure_limit=5, failure_window=900.0, failure_delay=0.0)


class Client(RawClient):
    """A raw SMTP client that can start TLS."""

    @classmethod
    async def connect(cls, port: int, tls: ssl.SSLContext | None = None) -> "Client":
        client = await cls.open(port, tls=tls)
        assert (await client.read_reply())[0].startswith("220 ")
        return client

    async def starttls(self, context: ssl.SSLContext) -> None:
        assert await self.last("STARTTLS") == "220 2.0.0 Ready to start TLS"
        async with asyncio.timeout(IO_TIMEOUT):
            await self.writer.start_tls(context)

    def peer_certificate(self) -> bytes:
        ssl_object = self.writer.get_extra_info("ssl_object")
        assert ssl_object is not None
        der: bytes = ssl_object.getpeercert(binary_form=True)
        return der

    async def send_message(self) -> str:
        assert (await self.last("MAIL FROM:<app@example.org>")).startswith("250 ")
        assert (await self.last("RCPT TO:<user@example.org>")).startswith("250 ")
        assert (await self.last("DATA")).startswith("354 ")
        self.writer.write(MESSAGE + b".\r\n")
        return (await self.read_reply())[-1]


def der_of(cert: Path) -> bytes:
    return ssl.PEM_cert_to_DER_cert(cert.read_text())


type Serve = Callable[..., Awaitable[tuple[SmtpServer, FakePublisher]]]


@pytest.fixture
def serve(servers: Servers, certificate: tuple[Path, Path]) -> Serve:
    async def start(
        kind: ListenerKind = ListenerKind.SMTP,
        *,
        tls: TlsContextStore | None = None,
        authenticator: Any = None,
        with_tls: bool = True,
    ) -> tuple[SmtpServer, FakePublisher]:
        if tls is None and with_tls:
            tls = TlsContextStore(*certificate)
        options = SessionOptions(policy=ListenerPolicy.for_kind(kind), tls=tls, authenticator=authenticator)
        return await servers.start(options=options)

    return start


def ehlo_keywords(client: smtplib.SMTP) -> set[str]:
    return set(client.esmtp_features)


# -- MX listener: STARTTLS offered, AUTH only after it -------------------------------------------------


async def test_smtplib_starttls_on_the_mx_listener(serve, certificate, authenticator):
    server, publisher = await serve(authenticator=authenticator)

    def session() -> tuple[set[str], set[str], tuple[int, bytes], bytes | None]:
        with smtplib.SMTP("127.0.0.1", server.port, timeout=IO_TIMEOUT) as client:
            client.ehlo("client.example")
            before = ehlo_keywords(client)
            client.starttls(context=insecure_client_context())
            client.ehlo("client.example")
            after = ehlo_keywords(client)
            again = client.docmd("STARTTLS")
            cert = client.sock.getpeercert(binary_form=True)  # type: ignore[union-attr]
            client.login("app", "secret")
            client.sendmail("app@example.org", ["user@example.org"], MESSAGE)
            return before, after, again, cert

    before, after, again, cert = await asyncio.to_thread(session)
    assert "starttls" in before and "auth" not in before
    assert "starttls" not in after and after.issuperset({"auth"})
    assert again == (503, b"5.5.1 Error: TLS already active")
    assert cert == der_of(certificate[0])
    message = only_message(publisher)
    assert b"with ESMTPSA id " in message.content.split(b"\r\n\r\n")[0]


async def test_auth_is_not_offered_without_an_authenticator(serve):
    server, _ = await serve()
    client = await Client.connect(server.port)
    await client.command("EHLO client.example")
    await client.starttls(insecure_client_context())
    features = await client.command("EHLO client.example")
    assert not any(line[4:].startswith("AUTH") for line in features)
    assert await client.last("AUTH PLAIN AGFwcABzZWNyZXQ=") == "503 5.5.1 Error: authentication not enabled"
    await client.close()


async def test_no_starttls_without_a_certificate(serve):
    server, _ = await serve(with_tls=False)
    client = await Client.connect(server.port)
    features = await client.command("EHLO client.example")
    assert not any("STARTTLS" in line for line in features)
    assert (await client.last("STARTTLS")).startswith("454 4.7.0 ")
    await client.close()


# -- STARTTLS hardening ----------------------------------------------------------------------------------


async def test_commands_pipelined_after_starttls_are_discarded(serve):
    """RFC 3207 section 4.2 / CVE-2011-0411: one write holding STARTTLS and MAIL; the MAIL must not run."""
    server, _ = await serve()
    client = await Client.connect(server.port)
    await client.command("EHLO client.example")
    client.writer.write(b"STARTTLS\r\nMAIL FROM:<x@example.net>\r\n")
    await client.writer.drain()
    assert await client.read_reply() == ["220 2.0.0 Ready to start TLS"]
    async with asyncio.timeout(IO_TIMEOUT):
        await client.writer.start_tls(insecure_client_context())
    # The first reply inside TLS answers our NOOP: no injected MAIL reply is waiting, no transaction is open.
    assert await client.last("NOOP") == "250 2.0.0 OK"
    assert (await client.last("RCPT TO:<user@example.org>")).startswith("503 5.5.1 ")
    await client.command("EHLO client.example")
    assert (await client.send_message()).startswith("250 2.0.0 Ok: queued as ")
    await client.close()


async def test_failed_handshake_is_counted_and_closes(serve, metrics):
    server, _ = await serve()
    before = metrics.value("kubemta_tls_handshakes_total", result="failure")
    client = await Client.connect(server.port)
    await client.command("EHLO client.example")
    assert await client.last("STARTTLS") == "220 2.0.0 Ready to start TLS"
    client.writer.write(b"this is not a TLS ClientHello\r\n" * 4)
    async with asyncio.timeout(IO_TIMEOUT):
        assert not await client.reader.read()
    assert metrics.value("kubemta_tls_handshakes_total", result="failure") == before + 1
    await eventually(lambda: server.session_count == 0)
    await client.close()


# -- submission: STARTTLS, then AUTH, then MAIL ----------------------------------------------------------


async def test_submission_demands_starttls_then_auth(serve, metrics, authenticator):
    server, publisher = await serve(ListenerKind.SUBMISSION, authenticator=authenticator)
    starttls_before = metrics.rejected("starttls_required")
    auth_before = metrics.rejected("auth_required")

    def session() -> dict[str, Any]:
        seen: dict[str, Any] = {}
        with smtplib.SMTP("127.0.0.1", server.port, timeout=IO_TIMEOUT) as client:
            client.ehlo("client.example")
            seen["features"] = ehlo_keywords(client)
            seen["mail"] = client.docmd("MAIL", "FROM:<app@example.org>")
            seen["auth"] = client.docmd("AUTH", "PLAIN AGFwcABzZWNyZXQ=")
            client.starttls(context=insecure_client_context())
            client.ehlo("client.example")
            seen["mail_tls"] = client.docmd("MAIL", "FROM:<app@example.org>")
            client.login("app", "secret")
            client.sendmail("app@example.org", ["user@example.org"], MESSAGE)
        return seen

    seen = await asyncio.to_thread(session)
    assert "auth" not in seen["features"]
    assert seen["mail"] == (530, b"5.7.0 Must issue a STARTTLS command first")
    assert seen["auth"] == (530, b"5.7.0 Must issue a STARTTLS command first")
    assert seen["mail_tls"] == (530, b"5.7.0 Authentication required")
    assert metrics.rejected("starttls_required") == starttls_before + 2
    assert metrics.rejected("auth_required") == auth_before + 1
    assert b"with ESMTPSA id " in only_message(publisher).content


# -- SMTPS: implicit TLS, AUTH required ------------------------------------------------------------------


async def test_smtps_with_an_ssl_client(serve, certificate, metrics, authenticator):
    server, publisher = await serve(ListenerKind.SMTPS, authenticator=authenticator)
    before = metrics.value("kubemta_tls_handshakes_total", result="success")

    def session() -> dict[str, Any]:
        seen: dict[str, Any] = {}
        with smtplib.SMTP_SSL(
            "127.0.0.1", server.port, timeout=IO_TIMEOUT, context=insecure_client_context()
        ) as client:
            client.ehlo("client.example")
            seen["features"] = ehlo_keywords(client)
            seen["cert"] = client.sock.getpeercert(binary_form=True)  # type: ignore[union-attr]
            seen["starttls"] = client.docmd("STARTTLS")
            seen["mail"] = client.docmd("MAIL", "FROM:<app@example.org>")
            client.login("app", "secret")
            client.sendmail("app@example.org", ["user@example.org"], MESSAGE)
        return seen

    seen = await asyncio.to_thread(session)
    assert "auth" in seen["features"] and "starttls" not in seen["features"]
    assert seen["cert"] == der_of(certificate[0])
    assert seen["starttls"] == (503, b"5.5.1 Error: TLS already active")
    assert seen["mail"] == (530, b"5.7.0 Authentication required")
    assert b"with ESMTPSA id " in only_message(publisher).content
    assert metrics.value("kubemta_tls_handshakes_total", result="success") == before + 1


async def run_swaks(*args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        swaks(), *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    async with asyncio.timeout(30):
        output, _ = await process.communicate()
    assert process.returncode is not None
    return process.returncode, output.decode(errors="replace")


async def test_swaks_starttls_and_implicit_tls(serve, authenticator):
    mx, mx_publisher = await serve()
    smtps, smtps_publisher = await serve(ListenerKind.SMTPS, authenticator=authenticator)
    common = ("--from", "app@example.org", "--to", "user@example.org", "--helo", "client.example", "--timeout", "5")
    code, output = await run_swaks("--server", f"127.0.0.1:{mx.port}", "--tls", *common)
    assert code == 0, output
    assert "TLS started" in output and "250 2.0.0 Ok: queued as" in output
    code, output = await run_swaks(
        "--server", f"127.0.0.1:{smtps.port}", "--tlsc", "--auth", "LOGIN", "--auth-user", "app",
        "--auth-password", "secret", *common,
    )  # fmt: skip
    assert code == 0, output
    assert "235 2.7.0" in output and "250 2.0.0 Ok: queued as" in output
    assert len(mx_publisher.published) == 1 and len(smtps_publisher.published) == 1


# -- TLS 1.2 is the floor --------------------------------------------------------------------------------


def legacy_client_context() -> ssl.SSLContext:
    with warnings.catch_warnings(action="ignore", category=DeprecationWarning):  # TLS 1.0/1.1 are deprecated
        context = insecure_client_context(minimum_version=ssl.TLSVersion.TLSv1, maximum_version=ssl.TLSVersion.TLSv1_1)
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    return context


async def can_negotiate_tls11(certificate: tuple[Path, Path]) -> bool:
    """Control: does this machine's OpenSSL speak TLS 1.1 at all (to a server that allows it)?"""
    permissive = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with warnings.catch_warnings(action="ignore", category=DeprecationWarning):
        permissive.minimum_version = ssl.TLSVersion.TLSv1
    permissive.set_ciphers("DEFAULT:@SECLEVEL=0")
    permissive.load_cert_chain(*certificate)

    async def greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    control = await asyncio.start_server(greet, "127.0.0.1", 0, ssl=permissive)
    try:
        async with asyncio.timeout(IO_TIMEOUT):
            _, writer = await asyncio.open_connection(
                "127.0.0.1", control.sockets[0].getsockname()[1], ssl=legacy_client_context()
            )
        writer.close()
        return True
    except (ssl.SSLError, ConnectionError):
        return False
    finally:
        control.close()


async def test_tls_below_1_2_is_refused(serve, certificate, authenticator):
    assert build_server_context(*certificate).minimum_version == ssl.TLSVersion.TLSv1_2
    # the control: without it, a client that cannot speak TLS 1.1 at all would make the refusal below vacuous
    assert await can_negotiate_tls11(certificate), "this OpenSSL cannot negotiate TLS 1.1 even with a permissive server"
    server, _ = await serve(ListenerKind.SMTPS, authenticator=authenticator)
    with pytest.raises((ssl.SSLError, ConnectionError)):
        async with asyncio.timeout(IO_TIMEOUT):
            await asyncio.open_connection("127.0.0.1", server.port, ssl=legacy_client_context())
    modern = await Client.connect(server.port, insecure_client_context())
    assert modern.writer.get_extra_info("ssl_object").version() in ("TLSv1.2", "TLSv1.3")
    await modern.close()


# -- certificate rotation --------------------------------------------------------------------------------


async def test_rotation_serves_new_sessions_the_new_certificate_and_keeps_old_sessions(serve, tmp_path, metrics):
    live, old_dir, new_dir = tmp_path / "live", tmp_path / "old", tmp_path / "new"
    for directory in (live, old_dir, new_dir):
        directory.mkdir()
    old_cert, old_key = make_self_signed_cert(old_dir, "old.kubemta.test")
    new_cert, new_key = make_self_signed_cert(new_dir, "new.kubemta.test")
    cert, key = live / "tls.crt", live / "tls.key"
    shutil.copy(old_cert, cert)
    shutil.copy(old_key, key)
    store = TlsContextStore(cert, key)
    watcher = asyncio.create_task(store.watch(0.05))
    loaded_before = metrics.value("kubemta_tls_certificate_reloads_total", result="loaded")
    try:
        server, publisher = await serve(tls=store)
        old_session = await Client.connect(server.port)
        await old_session.command("EHLO client.example")
        await old_session.starttls(insecure_client_context())
        assert old_session.peer_certificate() == der_of(old_cert)

        shutil.copy(new_cert, cert)
        shutil.copy(new_key, key)
        await eventually(
            lambda: metrics.value("kubemta_tls_certificate_reloads_total", result="loaded") > loaded_before
        )

        new_session = await Client.connect(server.port)
        await new_session.command("EHLO client.example")
        await new_session.starttls(insecure_client_context())
        assert new_session.peer_certificate() == der_of(new_cert)

        await old_session.command("EHLO client.example")
        assert (await old_session.send_message()).startswith("250 2.0.0 Ok: queued as ")
        assert old_session.peer_certificate() == der_of(old_cert)
        assert len(publisher.published) == 1
        await old_session.close()
        await new_session.close()
    finally:
        watcher.cancel()


async def test_a_broken_new_pair_keeps_the_old_context(tmp_path, metrics):
    cert, key = make_self_signed_cert(tmp_path, "one.kubemta.test")
    other_dir = tmp_path / "other"
    other_dir.mkdir()
    _, other_key = make_self_signed_cert(other_dir, "two.kubemta.test")
    store = TlsContextStore(cert, key)
    first = store.current
    failed_before = metrics.value("kubemta_tls_certificate_reloads_total", result="failed")
    shutil.copy(other_key, key)  # the key no longer matches the certificate
    assert store.reload_if_changed() is False
    assert store.current is first
    assert store.reload_if_changed() is False  # logged and counted once, not every interval
    assert metrics.value("kubemta_tls_certificate_reloads_total", result="failed") == failed_before + 1
    key.write_bytes(b"")
    assert store.reload_if_changed() is False
    assert store.current is first
