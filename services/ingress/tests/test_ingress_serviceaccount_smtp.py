"""SMTP AUTH PLAIN with a ServiceAccount token as the password: smtplib against a real ingress SMTP server,
the real `kubernetes` client and the fake TokenReview API over HTTPS."""

import asyncio
import base64
import smtplib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from kubemta.v1 import message_pb2
from kubemta_ingress import server as server_module
from kubemta_ingress.auth import UsersAuthenticator
from kubemta_ingress.serviceaccounts import ServiceAccountVerifier, build_serviceaccount_verifier
from kubemta_ingress.session.core import AUTH_LINE_LIMIT
from kubemta_ingress.settings import IngressSettings
from kubemta_ingress.users import Identity, User, UsersFile, hash_password, render
from tests.harness.fake_kube_api import FakeKubeApi, kube_api  # noqa: F401  (kube_api: a fixture)
from tests.harness.fake_publisher import FakePublisher
from tests.harness.ingress_kit import IO_TIMEOUT, RawClient, Servers

IDENTITIES = "apps/mailer:mailer@example.com\napps/other:other@example.com\n"
MESSAGE = b"From: mailer@example.com\r\nTo: x@other.org\r\nSubject: hi\r\n\r\nhello\r\n"
SA_LOGIN = "apps/mailer"


@dataclass
class SaServer:
    port: int
    publisher: FakePublisher
    authenticator: UsersAuthenticator
    api: FakeKubeApi
    clients: list[RawClient]

    async def connect(self) -> RawClient:
        client = await RawClient.open(self.port)
        self.clients.append(client)
        assert (await client.read_reply())[-1].startswith("220 ")
        assert (await client.last("EHLO client.example")).startswith("250 ")
        return client


type StartSaServer = Callable[..., Awaitable[SaServer]]


@pytest.fixture
async def start_sa_server(
    tmp_path: Path,
    servers: Servers,
    long_auth_lines: None,
    kube_api: FakeKubeApi,  # noqa: F811
) -> AsyncIterator[StartSaServer]:
    """`await start_sa_server()`: an ingress offering AUTH in clear text, with a users file and ServiceAccounts.

    Its sessions read AUTH lines as long as RFC 4954 allows (`long_auth_lines`): a ServiceAccount
    token is longer than aiosmtpd's default command line.
    """
    verifiers: list[ServiceAccountVerifier] = []
    started: list[SaServer] = []

    async def start(*, failure_limit: int = 5) -> SaServer:
        identities = tmp_path / "sa-identities"
        identities.write_text(IDENTITIES)
        users = tmp_path / "users"
        users.write_text(
            render([User("app", hash_password("app-pass", log2_n=10), (Identity.parse("app@example.com"),))])
        )
        settings = IngressSettings(
            serviceaccount_identities_file=identities,
            kubernetes_api_url=kube_api.url,
            kubernetes_token_file=kube_api.caller_token_file,
            kubernetes_ca_file=kube_api.ca_file,
            tokenreview_timeout=5.0,
        )
        verifier = build_serviceaccount_verifier(settings)
        assert verifier is not None
        verifiers.append(verifier)
        authenticator = UsersAuthenticator(
            UsersFile(users), failure_limit=failure_limit, failure_window=900.0, failure_delay=0.0,
            serviceaccounts=verifier,
        )  # fmt: skip
        smtp_server, publisher = await servers.start(
            local_domains=("example.com",),
            relay_networks=(),
            options=server_module.SessionOptions(authenticator=authenticator),
        )
        sa_server = SaServer(smtp_server.port, publisher, authenticator, kube_api, [])
        started.append(sa_server)
        return sa_server

    yield start
    for sa_server in started:
        for client in sa_server.clients:
            await client.close()
    for verifier in verifiers:
        await verifier.close()


def login(port: int, user: str, token: str, *, initial_response: bool = True, source: str = "127.0.0.1") -> int:
    """AUTH PLAIN with smtplib (with the initial response, or after the 334 continuation); the reply code."""
    with smtplib.SMTP("127.0.0.1", port, timeout=IO_TIMEOUT, source_address=(source, 0)) as client:
        client.ehlo("client.example")
        client.user, client.password = user, token
        try:
            code, _ = client.auth("PLAIN", client.auth_plain, initial_response_ok=initial_response)
        except smtplib.SMTPAuthenticationError as exc:
            return exc.smtp_code
        except smtplib.SMTPServerDisconnected:
            return -1
        return code


def send(port: int, user: str, token: str, sender: str) -> tuple[int, bytes] | dict[str, tuple[int, bytes]]:
    """Log in, then send MESSAGE from `sender`: the refusal of MAIL FROM, or sendmail's result."""
    with smtplib.SMTP("127.0.0.1", port, timeout=IO_TIMEOUT) as client:
        client.ehlo("client.example")
        client.user, client.password = user, token
        code, reply = client.auth("PLAIN", client.auth_plain)
        assert (code, reply) == (235, b"2.7.0 Authentication successful")
        try:
            return client.sendmail(sender, ["x@other.org"], MESSAGE)
        except smtplib.SMTPSenderRefused as exc:
            return exc.smtp_code, exc.smtp_error


def plain(user: str, password: str) -> str:
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


@pytest.mark.parametrize("user", [SA_LOGIN, "system:serviceaccount:apps:mailer"])
async def test_token_login_and_send_inside_the_identities(start_sa_server, user):
    server = await start_sa_server()
    token = server.api.mint("apps", "mailer", audiences=["kubemta"])
    assert await asyncio.to_thread(send, server.port, user, token, "mailer@example.com") == {}
    published = message_pb2.AcceptedMessage.FromString(server.publisher.published[0].body)
    assert published.authenticated_user == "system:serviceaccount:apps:mailer"
    refused = await asyncio.to_thread(send, server.port, user, token, "other@example.com")
    assert isinstance(refused, tuple) and refused[0] == 553 and refused[1].startswith(b"5.7.1")
    assert len(server.publisher.published) == 1
    assert server.api.reviews == 1  # the second login came from the cache


@pytest.mark.parametrize("initial_response", [True, False])
@pytest.mark.parametrize("padding", [0, 1200])
async def test_realistic_token_sizes(start_sa_server, initial_response, padding):
    """A 1-2 KiB token makes a 1.4-2.8 KiB AUTH line, over RFC 5321's 512-octet command limit (RFC 4954 §4)."""
    server = await start_sa_server()
    token = server.api.mint("apps", "mailer", audiences=["kubemta"], padding=padding)
    assert len(token) > (1800 if padding else 700)
    assert await asyncio.to_thread(login, server.port, SA_LOGIN, token, initial_response=initial_response) == 235


async def test_wrong_tokens_get_535(start_sa_server, metrics):
    server = await start_sa_server(failure_limit=100)
    failures = metrics.value("kubemta_auth_attempts_total", result="failure")
    other = server.api.mint("apps", "other", audiences=["kubemta"])
    unknown = server.api.mint("apps", "mailer", audiences=["kubemta"])
    del server.api.tokens[unknown]
    attempts = [
        (SA_LOGIN, unknown),  # not genuine
        (SA_LOGIN, other),  # another account's token
        ("apps/nobody", server.api.mint("apps", "nobody", audiences=["kubemta"])),  # not in the identities file
        (SA_LOGIN, server.api.mint("apps", "mailer", audiences=["vault"])),  # another audience
        (SA_LOGIN, server.api.mint("apps", "mailer", audiences=["kubemta"], lifetime=-5)),  # expired
        ("app", server.api.mint("apps", "mailer", audiences=["kubemta"])),  # a users file name
        (SA_LOGIN, "app-pass"),  # not JWT-shaped: nobody is asked
    ]
    for user, token in attempts:
        assert await asyncio.to_thread(login, server.port, user, token) == 535, user
    assert metrics.value("kubemta_auth_attempts_total", result="failure") == failures + len(attempts)
    assert server.api.reviews == 5
    assert await asyncio.to_thread(login, server.port, "app", "app-pass") == 235  # the users file still works


async def test_api_down_is_a_temporary_failure(start_sa_server, metrics):
    server = await start_sa_server(failure_limit=1)
    token = server.api.mint("apps", "mailer", audiences=["kubemta"])
    server.api.fail_with = 503
    unavailable = metrics.value("kubemta_auth_attempts_total", result="unavailable")
    assert await asyncio.to_thread(login, server.port, SA_LOGIN, token) == 454
    assert await asyncio.to_thread(login, server.port, SA_LOGIN, token) == 454  # no failure was counted
    assert metrics.value("kubemta_auth_attempts_total", result="unavailable") == unavailable + 2
    server.api.fail_with = None
    assert await asyncio.to_thread(login, server.port, SA_LOGIN, token) == 235


async def test_failures_lock_the_account_and_the_client(start_sa_server):
    server = await start_sa_server(failure_limit=2)
    good = server.api.mint("apps", "mailer", audiences=["kubemta"])
    bad = server.api.mint("apps", "other", audiences=["kubemta"])
    assert await asyncio.to_thread(login, server.port, SA_LOGIN, bad) == 535
    assert await asyncio.to_thread(login, server.port, "system:serviceaccount:apps:mailer", bad) == 535
    assert server.authenticator.usernames.locked("system:serviceaccount:apps:mailer")  # both spellings counted
    assert server.authenticator.clients.locked("127.0.0.1")
    assert await asyncio.to_thread(login, server.port, SA_LOGIN, good) == 421  # and closed
    # From another address: the account is locked, another account is not.
    assert await asyncio.to_thread(login, server.port, SA_LOGIN, good, source="127.0.0.3") == 421
    assert await asyncio.to_thread(login, server.port, "apps/other", bad, source="127.0.0.3") == 235


async def test_unlisted_accounts_are_not_counted_as_usernames(start_sa_server):
    server = await start_sa_server(failure_limit=100)
    for number in range(5):
        assert await asyncio.to_thread(login, server.port, f"apps/made-up-{number}", "ab.cd.ef") == 535
    assert len(server.authenticator.usernames) == 0


@pytest.mark.parametrize(
    "credentials",
    [
        "\0apps/mailer\0ab.cd.e\x01f",
        "\0apps/mailer\0ab.cd.ef\r\nMAIL FROM:<x@y>",
        "\0apps/mailer\r\n\0ab.cd.ef",
        "\0apps/mail\x00er\0ab.cd.ef",
        "\0system:serviceaccount:apps:mailer:x\0ab.cd.ef",
        "\0apps/mailer\0" + "ab." + "c" * 9000 + ".ef",
        "\0apps/mailer\0\udcff",
    ],
)
async def test_hostile_credentials(start_sa_server, credentials):
    server = await start_sa_server(failure_limit=100)
    client = await server.connect()
    encoded = base64.b64encode(credentials.encode("utf-8", "surrogateescape")).decode()
    reply = await client.last(f"AUTH PLAIN {encoded}")
    assert reply[:3] in ("535", "501", "500"), reply
    assert (await client.last("NOOP")).startswith("250")
    assert server.api.reviews == 0


# -- long AUTH lines ---------------------------------------------------------------------------------------


@pytest.fixture
def long_auth_lines(auth_in_clear_text: None) -> None:
    """The ingress' sessions read AUTH lines of up to 12288 octets (RFC 4954 section 4; session/core.py):
    aiosmtpd's defaults (a 1001-octet stream reader, 512-octet commands) refuse a ServiceAccount token."""
    assert server_module.IngressSMTP.line_length_limit >= AUTH_LINE_LIMIT + 2
