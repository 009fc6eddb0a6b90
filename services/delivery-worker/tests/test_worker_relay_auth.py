"""Relayhost with AUTH against a real aiosmtpd peer (STARTTLS, then AUTH PLAIN/LOGIN with an authenticator).

The password goes only over a verified certificate (chain to KUBEMTA_TLS_CA_FILE, name of the
relayhost), unless KUBEMTA_RELAYHOST_TLS_UNVERIFIED_NAME names exactly that host. The peer
records every AUTH command it receives, so "no AUTH" means the credentials never left the worker.
"""

import asyncio
import dataclasses
import logging
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from pydantic import SecretStr

from kubemta.v1 import message_pb2
from kubemta_delivery_worker.deliverer import Deliverer, smtp_options
from kubemta_delivery_worker.pool import ConnectionPool
from kubemta_delivery_worker.relay_auth import authenticate, relay_credentials, session_route
from kubemta_delivery_worker.settings import WorkerSettings
from kubemta_delivery_worker.tls import verifying_tls_context
from kubemta_delivery_worker.transaction import SmtpConnection, SmtpOptions
from tests.harness.smtp_peer import make_self_signed_cert
from tests.harness.tls_ca import TestCa

USER, PASSWORD = "mailer@example.test", "s3cret-Pa55"
RELAY = "relay.example.test"
DELIVERED, TEMPORARY = message_pb2.OUTCOME_DELIVERED, message_pb2.OUTCOME_TEMPORARY


class _RecordingSMTP(SMTP):
    """aiosmtpd's server, noting every AUTH command before it is handled."""

    def __init__(self, peer: "RelayPeer", *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._peer = peer

    async def smtp_AUTH(self, arg: str) -> None:  # noqa: N802 - aiosmtpd command method
        self._peer.auth_commands.append(arg.split(" ", 1)[0].upper())
        await super().smtp_AUTH(arg)


class RelayPeer:
    """An aiosmtpd relay that demands AUTH (only after STARTTLS) before MAIL FROM."""

    def __init__(self, address: str, cert: tuple[Path, Path] | None, mechanisms: tuple[str, ...] = ()) -> None:
        self.address = address
        self.port = 0
        self.messages: list[tuple[str, bool]] = []  # (authenticated user, tls)
        self.logins: list[tuple[str, str]] = []  # (mechanism, user)
        self.auth_commands: list[str] = []  # every AUTH command received, by mechanism
        self.connections = 0
        self._cert = cert
        self._mechanisms = mechanisms
        self._server: asyncio.Server | None = None
        self._protocols: list[SMTP] = []

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        assert isinstance(data, LoginPassword)
        user = data.login.decode()
        self.logins.append((mechanism, user))
        if user == USER and data.password.decode() == PASSWORD:
            return AuthResult(success=True, auth_data=user)
        return AuthResult(success=False, handled=False)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        self.messages.append((str(session.auth_data), session.ssl is not None))
        return "250 2.0.0 Ok: queued"

    def _factory(self) -> SMTP:
        self.connections += 1
        context = None
        if self._cert is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*self._cert)
        kwargs: dict[str, Any] = {}
        if self._mechanisms:
            kwargs["auth_exclude_mechanism"] = [m for m in ("PLAIN", "LOGIN") if m not in self._mechanisms]
        protocol = _RecordingSMTP(
            self,
            self,
            hostname=RELAY,
            tls_context=context,
            require_starttls=context is not None,
            authenticator=self._authenticate,
            auth_required=True,
            auth_require_tls=True,
            **kwargs,
        )
        self._protocols.append(protocol)
        return protocol

    async def start(self) -> None:
        self._server = await asyncio.get_running_loop().create_server(self._factory, self.address, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for protocol in self._protocols:
                if isinstance(protocol.transport, asyncio.Transport):
                    protocol.transport.abort()
            async with asyncio.timeout(5):
                await self._server.wait_closed()


@pytest.fixture(scope="module")
def test_ca(tmp_path_factory: pytest.TempPathFactory) -> TestCa:
    return TestCa.create(Path(tmp_path_factory.mktemp("relay-ca")))


@pytest.fixture(scope="module")
def relay_cert(test_ca: TestCa) -> tuple[Path, Path]:
    """A certificate for the relayhost's name, from the test CA."""
    return test_ca.issue(RELAY)


@pytest.fixture(scope="module")
def self_signed_relay_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate with the relayhost's name: right name, no trusted chain."""
    return make_self_signed_cert(tmp_path_factory.mktemp("self-signed"), RELAY)


@pytest.fixture
async def relay(loopback: Callable[[], str], relay_cert) -> AsyncIterator[Callable[..., Any]]:
    peers: list[RelayPeer] = []

    async def start(
        *, tls: bool = True, mechanisms: tuple[str, ...] = (), cert: tuple[Path, Path] | None = None
    ) -> RelayPeer:
        peer = RelayPeer(loopback(), (cert or relay_cert) if tls else None, mechanisms)
        await peer.start()
        peers.append(peer)
        return peer

    yield start
    for peer in peers:
        await peer.stop()


def relay_job(
    job,
    peer: RelayPeer,
    policy: message_pb2.TlsPolicy.ValueType = message_pb2.TLS_POLICY_ENCRYPT,
    name: str = RELAY,
) -> message_pb2.DeliveryJob:
    the_job: message_pb2.DeliveryJob = job([message_pb2.RouteHost(hostname=name, address=peer.address, port=peer.port)])
    the_job.route.source = "relayhost"
    the_job.route.tls_policy = policy
    the_job.route.tls_policy_source = "relayhost (encrypt at least)"  # as the dns-resolver sets it
    return the_job


def with_login(options: SmtpOptions, test_ca: TestCa, password: str = PASSWORD, unverified: str = "") -> SmtpOptions:
    return dataclasses.replace(
        options,
        verify_tls_context=verifying_tls_context(str(test_ca.cert_file)),
        relay_credentials=relay_credentials(USER, SecretStr(password), unverified),
    )


def worker_options(monkeypatch: pytest.MonkeyPatch, **env: str) -> SmtpOptions:
    """The SMTP options the worker builds from KUBEMTA_* variables (with short test timeouts)."""
    monkeypatch.setenv("KUBEMTA_RELAYHOST_USERNAME", USER)
    monkeypatch.setenv("KUBEMTA_RELAYHOST_PASSWORD", PASSWORD)
    for name, value in env.items():
        monkeypatch.setenv(f"KUBEMTA_{name.upper()}", value)
    options = smtp_options(WorkerSettings.load())
    return dataclasses.replace(options, connect_timeout=2.0, command_timeout=5.0, data_timeout=5.0)


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
async def test_relayhost_gets_starttls_then_auth(relay, job, options, test_ca, mechanism):
    peer = await relay(mechanisms=(mechanism,))

    [result] = await Deliverer(with_login(options, test_ca)).deliver(relay_job(job, peer))

    assert result.outcome == DELIVERED
    assert peer.logins == [(mechanism, USER)]
    assert peer.messages == [(USER, True)]


async def test_wrong_password_defers_and_never_logs_the_password(relay, job, options, test_ca, caplog):
    peer = await relay()
    caplog.set_level(logging.DEBUG)

    [result] = await Deliverer(with_login(options, test_ca, "wrong-password")).deliver(relay_job(job, peer))

    assert result.outcome == TEMPORARY
    assert result.smtp_code == 535
    assert result.status == "4.7.8"
    assert "SASL authentication to relayhost relay.example.test" in result.diagnostic
    assert "535" in result.diagnostic
    assert peer.messages == []
    assert "wrong-password" not in caplog.text and "wrong-password" not in result.diagnostic


async def test_no_credentials_over_plaintext(relay, job, options, test_ca):
    peer = await relay(tls=False)

    [result] = await Deliverer(with_login(options, test_ca)).deliver(relay_job(job, peer, message_pb2.TLS_POLICY_NONE))

    assert result.outcome == TEMPORARY
    assert "TLS is required to authenticate to relayhost" in result.diagnostic
    assert peer.auth_commands == [] and peer.messages == []


async def test_relayhost_without_starttls_is_deferred(relay, job, options, test_ca):
    peer = await relay(tls=False)

    [result] = await Deliverer(with_login(options, test_ca)).deliver(relay_job(job, peer))

    assert result.outcome == TEMPORARY
    assert result.status == "4.7.4"
    assert result.diagnostic.startswith("TLS is required, but was not offered by host relay.example.test")
    assert peer.auth_commands == []


async def test_no_auth_for_routes_other_than_the_relayhost(relay, job, options, test_ca):
    peer = await relay()
    the_job = relay_job(job, peer)
    the_job.route.source = "mx"

    [result] = await Deliverer(with_login(options, test_ca)).deliver(the_job)

    assert peer.auth_commands == []
    assert result.outcome != DELIVERED  # this relay refuses MAIL without AUTH
    assert "Authentication required" in result.diagnostic


# -- the certificate must be verified before the password is sent -------------------------------


@pytest.mark.parametrize(
    "policy", [message_pb2.TLS_POLICY_ENCRYPT, message_pb2.TLS_POLICY_MAY, message_pb2.TLS_POLICY_UNSPECIFIED]
)
async def test_self_signed_relayhost_gets_no_auth(
    relay, job, monkeypatch, self_signed_relay_cert, test_ca, caplog, metric, policy
):
    peer = await relay(cert=self_signed_relay_cert)
    options = worker_options(monkeypatch, tls_ca_file=str(test_ca.cert_file))
    caplog.set_level(logging.DEBUG)
    before = metric("kubemta_tls_outbound_total", result="verify_failed")

    [result] = await Deliverer(options).deliver(relay_job(job, peer, policy))

    assert result.outcome == TEMPORARY
    assert result.status == "4.7.5"
    assert result.diagnostic.startswith("TLS is required, but the certificate of host relay.example.test")
    assert "self-signed certificate" in result.diagnostic
    assert "relayhost AUTH: credentials go only over a verified certificate" in result.diagnostic
    assert peer.auth_commands == [] and peer.logins == [] and peer.messages == []
    assert PASSWORD not in caplog.text and PASSWORD not in result.diagnostic
    assert metric("kubemta_tls_outbound_total", result="verify_failed") == before + 1


async def test_relayhost_certificate_for_another_name_gets_no_auth(relay, job, monkeypatch, test_ca):
    peer = await relay(cert=test_ca.issue("other.example.test"))
    options = worker_options(monkeypatch, tls_ca_file=str(test_ca.cert_file))

    [result] = await Deliverer(options).deliver(relay_job(job, peer))

    assert result.outcome == TEMPORARY
    assert result.status == "4.7.5"
    assert "could not be verified" in result.diagnostic and "relay.example.test" in result.diagnostic
    assert peer.auth_commands == [] and peer.messages == []


async def test_relayhost_certificate_from_the_configured_ca_gets_auth(relay, job, monkeypatch, test_ca, metric):
    peer = await relay()
    options = worker_options(monkeypatch, tls_ca_file=str(test_ca.cert_file))
    before = metric("kubemta_tls_outbound_total", result="verified")

    [result] = await Deliverer(options).deliver(relay_job(job, peer))

    assert result.outcome == DELIVERED
    assert peer.auth_commands == ["PLAIN"] and peer.messages == [(USER, True)]
    assert metric("kubemta_tls_outbound_total", result="verified") == before + 1


async def test_opt_out_naming_the_relayhost_authenticates_over_an_unverified_certificate(
    relay, job, monkeypatch, self_signed_relay_cert, caplog
):
    peer = await relay(cert=self_signed_relay_cert)
    options = worker_options(monkeypatch, relayhost_tls_unverified_name="Relay.Example.Test.")
    caplog.set_level(logging.INFO)

    [result] = await Deliverer(options).deliver(relay_job(job, peer))

    assert result.outcome == DELIVERED
    assert peer.auth_commands == ["PLAIN"] and peer.messages == [(USER, True)]
    [warning] = [r for r in caplog.records if r.getMessage().startswith("authenticated to relayhost")]
    assert warning.levelno == logging.WARNING
    assert "certificate NOT verified" in warning.getMessage()
    assert PASSWORD not in caplog.text


async def test_opt_out_naming_another_host_does_not_apply(relay, job, monkeypatch, self_signed_relay_cert):
    peer = await relay(cert=self_signed_relay_cert)
    options = worker_options(monkeypatch, relayhost_tls_unverified_name="old-relay.example.test")

    [result] = await Deliverer(options).deliver(relay_job(job, peer))

    assert result.outcome == TEMPORARY and result.status == "4.7.5"
    assert peer.auth_commands == [] and peer.messages == []


async def test_an_unverified_session_is_not_reused_for_a_host_that_needs_verification(
    relay, job, options, test_ca, self_signed_relay_cert
):
    """Two names for one address: the opted-out name's unverified, authenticated session stays its own."""
    peer = await relay(cert=self_signed_relay_cert)
    pool: ConnectionPool[SmtpConnection] = ConnectionPool(idle_seconds=30, per_host=4, total=8)
    deliverer = Deliverer(with_login(options, test_ca, unverified=RELAY), pool=pool)
    try:
        [first] = await deliverer.deliver(relay_job(job, peer))
        assert first.outcome == DELIVERED and len(pool) == 1

        [second] = await deliverer.deliver(relay_job(job, peer, name="relay2.example.test"))
    finally:
        await deliverer.close()

    assert second.outcome == TEMPORARY and second.status == "4.7.5"
    assert peer.auth_commands == ["PLAIN"] and len(peer.messages) == 1
    assert peer.connections == 2


def test_a_session_that_authenticates_is_raised_to_verify_and_the_opt_out_to_encrypt_only():
    host = message_pb2.RouteHost(hostname="Relay.Example.Test.", address="192.0.2.7", port=587)
    creds = relay_credentials(USER, SecretStr(PASSWORD))
    opted = relay_credentials(USER, SecretStr(PASSWORD), "relay.example.test")
    route = message_pb2.Route(source="relayhost", tls_policy=message_pb2.TLS_POLICY_ENCRYPT)

    assert session_route(route, host, creds).tls_policy == message_pb2.TLS_POLICY_VERIFY
    assert session_route(route, host, opted).tls_policy == message_pb2.TLS_POLICY_ENCRYPT
    assert session_route(route, host, None) is route
    mx = message_pb2.Route(source="mx", tls_policy=message_pb2.TLS_POLICY_MAY)
    assert session_route(mx, host, creds) is mx
    verify = message_pb2.Route(source="relayhost", tls_policy=message_pb2.TLS_POLICY_VERIFY)
    assert session_route(verify, host, opted) is verify  # the opt-out never lowers an explicit verify
    none = message_pb2.Route(source="relayhost", tls_policy=message_pb2.TLS_POLICY_NONE)
    assert session_route(none, host, creds) is none  # and plaintext is refused at AUTH (4.7.4)


class _NoAuthSmtp:
    """Fails the test if anything tries to authenticate through it."""

    @property
    def server_auth_methods(self) -> list[str]:
        raise AssertionError("AUTH was attempted")


@pytest.mark.parametrize("opt_out", ["", "other.example.test"])
async def test_authenticate_refuses_an_unverified_session_unless_the_host_is_opted_out(opt_out):
    host = message_pb2.RouteHost(hostname=RELAY, address="192.0.2.7", port=587)
    route = message_pb2.Route(source="relayhost", tls_policy=message_pb2.TLS_POLICY_ENCRYPT)

    failure = await authenticate(
        _NoAuthSmtp(),  # type: ignore[arg-type]
        route,
        host,
        relay_credentials(USER, SecretStr(PASSWORD), opt_out),
        tls=True,
        verified=False,
        label=RELAY,
    )

    assert failure is not None and failure.status == "4.7.5"
    assert "was not verified" in failure.diagnostic and PASSWORD not in failure.diagnostic


@pytest.mark.parametrize("value", ["*.example.test", "a.example.test,b.example.test", "relay:587", "-bad-.test", "a b"])
def test_the_opt_out_is_one_host_name(monkeypatch, value):
    from kubemta_common.errors import ConfigError

    monkeypatch.setenv("KUBEMTA_RELAYHOST_TLS_UNVERIFIED_NAME", value)
    with pytest.raises(ConfigError, match="KUBEMTA_RELAYHOST_TLS_UNVERIFIED_NAME"):
        WorkerSettings.load()


@pytest.mark.parametrize(("value", "name"), [("Relay.Example.Test.", "relay.example.test"), ("192.0.2.7", "192.0.2.7")])
def test_the_opt_out_name_is_normalised(monkeypatch, value, name):
    monkeypatch.setenv("KUBEMTA_RELAYHOST_TLS_UNVERIFIED_NAME", value)
    assert WorkerSettings.load().relayhost_tls_unverified_name == name
