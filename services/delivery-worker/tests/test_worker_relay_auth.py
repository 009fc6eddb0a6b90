"""Relayhost with AUTH against a real aiosmtpd peer (STARTTLS, then AUTH PLAIN/LOGIN with an authenticator)."""

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
from kubemta_delivery_worker.deliverer import Deliverer
from kubemta_delivery_worker.relay_auth import relay_credentials
from kubemta_delivery_worker.transaction import SmtpOptions

USER, PASSWORD = "mailer@example.test", "s3cret-Pa55"
RELAY = "relay.example.test"


class RelayPeer:
    """An aiosmtpd relay that demands AUTH (only after STARTTLS) before MAIL FROM."""

    def __init__(self, address: str, cert: tuple[Path, Path] | None, mechanisms: tuple[str, ...] = ()) -> None:
        self.address = address
        self.port = 0
        self.messages: list[tuple[str, bool]] = []  # (authenticated user, tls)
        self.logins: list[tuple[str, str]] = []  # (mechanism, user)
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
        context = None
        if self._cert is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*self._cert)
        kwargs: dict[str, Any] = {}
        if self._mechanisms:
            kwargs["auth_exclude_mechanism"] = [m for m in ("PLAIN", "LOGIN") if m not in self._mechanisms]
        protocol = SMTP(
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


@pytest.fixture
async def relay(loopback: Callable[[], str], tls_cert) -> AsyncIterator[Callable[..., Any]]:
    peers: list[RelayPeer] = []

    async def start(*, tls: bool = True, mechanisms: tuple[str, ...] = ()) -> RelayPeer:
        peer = RelayPeer(loopback(), tls_cert if tls else None, mechanisms)
        await peer.start()
        peers.append(peer)
        return peer

    yield start
    for peer in peers:
        await peer.stop()


def relay_job(
    job, peer: RelayPeer, policy: message_pb2.TlsPolicy.ValueType = message_pb2.TLS_POLICY_ENCRYPT
) -> message_pb2.DeliveryJob:
    the_job: message_pb2.DeliveryJob = job(
        [message_pb2.RouteHost(hostname=RELAY, address=peer.address, port=peer.port)]
    )
    the_job.route.source = "relayhost"
    the_job.route.tls_policy = policy
    return the_job


def with_login(options: SmtpOptions, password: str = PASSWORD) -> SmtpOptions:
    return dataclasses.replace(options, relay_credentials=relay_credentials(USER, SecretStr(password)))


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
async def test_relayhost_gets_starttls_then_auth(relay, job, options, mechanism):
    peer = await relay(mechanisms=(mechanism,))

    [result] = await Deliverer(with_login(options)).deliver(relay_job(job, peer))

    assert result.outcome == message_pb2.OUTCOME_DELIVERED
    assert peer.logins == [(mechanism, USER)]
    assert peer.messages == [(USER, True)]


async def test_wrong_password_defers_and_never_logs_the_password(relay, job, options, caplog):
    peer = await relay()
    caplog.set_level(logging.DEBUG)

    [result] = await Deliverer(with_login(options, "wrong-password")).deliver(relay_job(job, peer))

    assert result.outcome == message_pb2.OUTCOME_TEMPORARY
    assert result.smtp_code == 535
    assert result.status == "4.7.8"
    assert "SASL authentication to relayhost relay.example.test" in result.diagnostic
    assert "535" in result.diagnostic
    assert peer.messages == []
    assert "wrong-password" not in caplog.text and "wrong-password" not in result.diagnostic


async def test_no_credentials_over_plaintext(relay, job, options):
    peer = await relay(tls=False)

    [result] = await Deliverer(with_login(options)).deliver(relay_job(job, peer, message_pb2.TLS_POLICY_MAY))

    assert result.outcome == message_pb2.OUTCOME_TEMPORARY
    assert "TLS is required to authenticate to relayhost" in result.diagnostic
    assert peer.logins == [] and peer.messages == []


async def test_relayhost_without_starttls_under_encrypt_is_deferred(relay, job, options):
    peer = await relay(tls=False)

    [result] = await Deliverer(with_login(options)).deliver(relay_job(job, peer))

    assert result.outcome == message_pb2.OUTCOME_TEMPORARY
    assert result.diagnostic.startswith("TLS is required, but was not offered by host relay.example.test")


async def test_no_auth_for_routes_other_than_the_relayhost(relay, job, options):
    peer = await relay()
    the_job = relay_job(job, peer)
    the_job.route.source = "mx"

    [result] = await Deliverer(with_login(options)).deliver(the_job)

    assert peer.logins == []
    assert result.outcome != message_pb2.OUTCOME_DELIVERED  # this relay refuses MAIL without AUTH
    assert "Authentication required" in result.diagnostic
