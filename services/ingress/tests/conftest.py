"""Fixtures for the ingress tests: a fake publisher, a real SMTP server on 127.0.0.1:0 in
the test's event loop, a raw SMTP client over asyncio streams, and metric readings.

Test modules cannot import each other (--import-mode=importlib), so the helpers reach the
tests through fixtures, or from `tests.harness.ingress_kit` (importable: the repository root
is on sys.path), which holds the code they share.
"""

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from kubemta_ingress import server as server_module
from kubemta_ingress.auth import UsersAuthenticator
from kubemta_ingress.server import SmtpServer
from kubemta_ingress.users import Identity, User, UsersFile, hash_password, render
from tests.harness.fake_publisher import FakePublisher
from tests.harness.ingress_kit import HOSTNAME, RawClient, Servers
from tests.harness.smtp_peer import make_self_signed_cert


@dataclass
class Harness:
    server: SmtpServer
    publisher: FakePublisher
    clients: list[RawClient] = field(default_factory=list)

    @property
    def port(self) -> int:
        return self.server.port

    async def connect(self, ehlo: str | None = "client.example") -> RawClient:
        """A connected client, after the greeting and (unless None) EHLO."""
        client = await RawClient.open(self.port)
        self.clients.append(client)
        client.greeting = await client.read_reply()
        if ehlo is not None:
            reply = await client.command(f"EHLO {ehlo}")
            assert reply[-1].startswith("250 "), reply
        return client


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """A service installs its own root handler (kubemta_common.logs); put pytest's back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    aiosmtpd_level = logging.getLogger("mail.log").level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        logging.getLogger("mail.log").setLevel(aiosmtpd_level)


type StartServer = Callable[..., Awaitable[Harness]]


@pytest.fixture
async def servers() -> AsyncIterator[Servers]:
    """Ingress servers on 127.0.0.1:0, stopped at the end of the test: `await servers.start(options=...)`."""
    started = Servers()
    yield started
    await started.stop_all()


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate and key for HOSTNAME."""
    return make_self_signed_cert(tmp_path, HOSTNAME)


@pytest.fixture
async def start_server(servers: Servers) -> AsyncIterator[StartServer]:
    """Start an ingress SMTP server on 127.0.0.1:0: `await start_server(local_domains=[...], ...)`."""
    harnesses: list[Harness] = []

    async def start(
        *,
        local_domains: tuple[str, ...] = ("example.org",),
        relay_networks: tuple[str, ...] = ("127.0.0.0/8", "::1/128"),
        max_recipients: int = 1000,
        max_message_size: int = 10240000,
        smtp_timeout: float = 30.0,
        publisher: FakePublisher | None = None,
    ) -> Harness:
        server, publisher = await servers.start(
            publisher,
            local_domains=local_domains,
            relay_networks=relay_networks,
            max_recipients=max_recipients,
            max_message_size=max_message_size,
            timeout=smtp_timeout,
        )
        harness = Harness(server, publisher)
        harnesses.append(harness)
        return harness

    yield start
    for harness in harnesses:
        for client in harness.clients:
            await client.close()


class Metrics:
    """Reads of the ingress metrics from the default registry."""

    @staticmethod
    def sample(name: str, **labels: str) -> float | None:
        """The sample's value, None when the series does not exist."""
        return REGISTRY.get_sample_value(name, labels)

    def value(self, name: str, **labels: str) -> float:
        """The sample's value, 0 when the series does not exist yet."""
        sample = self.sample(name, **labels)
        return 0.0 if sample is None else sample

    def rejected(self, reason: str) -> float:
        return self.value("kubemta_messages_rejected_total", reason=reason)


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


# -- AUTH: a server with the users-file authenticator, AUTH allowed without TLS (tests only) -----------------


class FakeClock:
    """A monotonic clock the test moves by hand (for the AUTH failure window)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class AuthServer:
    harness: Harness
    users_file: Path
    clock: FakeClock

    @property
    def port(self) -> int:
        return self.harness.port

    @property
    def publisher(self) -> FakePublisher:
        return self.harness.publisher


type StartAuthServer = Callable[..., Awaitable[AuthServer]]


@pytest.fixture
def auth_in_clear_text(monkeypatch: pytest.MonkeyPatch) -> None:
    """Servers started in this test offer and accept AUTH without TLS (aiosmtpd's auth_require_tls; tests only)."""

    class PlainAuthSMTP(server_module.IngressSMTP):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._auth_require_tls = False

    monkeypatch.setattr(server_module, "IngressSMTP", PlainAuthSMTP)


@pytest.fixture
async def start_auth_server(
    tmp_path: Path, servers: Servers, auth_in_clear_text: None
) -> AsyncIterator[StartAuthServer]:
    """`await start_auth_server(users={"app": ("secret", ["app@example.com"])})`: AUTH PLAIN/LOGIN in clear text."""
    auth_servers: list[AuthServer] = []

    async def start(
        *,
        users: dict[str, tuple[str, list[str]]],
        local_domains: tuple[str, ...] = ("example.com",),
        relay_networks: tuple[str, ...] = (),
        failure_limit: int = 5,
        failure_window: float = 900.0,
        failure_delay: float = 0.0,
        publisher: FakePublisher | None = None,
    ) -> AuthServer:
        path = tmp_path / f"users-{len(auth_servers)}"
        entries = [
            User(name, hash_password(password, log2_n=10), tuple(Identity.parse(item) for item in identities))
            for name, (password, identities) in users.items()
        ]
        path.write_text(render(entries, ["# test users"]), encoding="utf-8")
        clock = FakeClock()
        authenticator = UsersAuthenticator(
            UsersFile(path, clock=clock),
            failure_limit=failure_limit,
            failure_window=failure_window,
            failure_delay=failure_delay,
            clock=clock,
        )
        smtp_server, publisher = await servers.start(
            publisher,
            local_domains=local_domains,
            relay_networks=relay_networks,
            max_recipients=1000,
            max_message_size=10240000,
            timeout=30.0,
            options=server_module.SessionOptions(authenticator=authenticator),
        )
        auth_server = AuthServer(Harness(smtp_server, publisher), path, clock)
        auth_servers.append(auth_server)
        return auth_server

    yield start
    for auth_server in auth_servers:
        for client in auth_server.harness.clients:
            await client.close()
