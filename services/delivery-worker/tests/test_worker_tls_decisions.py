"""Every decision of tls_negotiation.py pinned, by calling `negotiate` on a real aiosmtplib session
against a small STARTTLS server written here (it records whether STARTTLS was asked for and the SNI
name, and can refuse STARTTLS or break the handshake): when STARTTLS is tried, which name is sent and
checked, what a failure's status and diagnostic say, when the session falls back to plaintext, and the
metric label of each result."""

import asyncio
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiosmtplib import SMTP, SMTPException, SMTPResponse

from kubemta.v1 import message_pb2
from kubemta_common.logs import message_context
from kubemta_delivery_worker.tls import opportunistic_tls_context, verifying_tls_context
from kubemta_delivery_worker.tls_negotiation import (
    STATUS_TLS_FAILED,
    STATUS_TLS_NOT_OFFERED,
    PolicyFailure,
    TlsContexts,
    TlsOutcome,
    contexts,
    negotiate,
    policy_name,
)
from tests.harness.smtp_peer import make_self_signed_cert
from tests.harness.tls_ca import TestCa

MX = "mx1.dest.test"
LABEL = "mx1.dest.test[peer]"
IO_TIMEOUT = 5.0


@dataclass
class StartTlsServer:
    """A one-purpose SMTP server: greeting, EHLO (STARTTLS offered or not), STARTTLS answered as scripted."""

    cert: tuple[Path, Path] | None = None
    offer: bool = True
    starttls_reply: str = "220 2.0.0 Ready to start TLS"
    broken: bool = False
    hang_up: bool = False
    asked_for_tls: int = 0
    sni: list[str | None] = field(default_factory=list)
    handshakes: int = 0
    address: str = "127.0.0.1"
    port: int = 0
    _server: asyncio.Server | None = None
    _writers: list[asyncio.StreamWriter] = field(default_factory=list)

    def _context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        assert self.cert is not None
        context.load_cert_chain(*self.cert)
        context.sni_callback = lambda _socket, name, _context: self.sni.append(name)
        return context

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        try:
            writer.write(b"220 peer.test ESMTP\r\n")
            while line := await reader.readline():
                verb = line.decode().strip().upper()
                if verb.startswith("EHLO"):
                    writer.write(
                        b"250-peer.test\r\n" + (b"250-STARTTLS\r\n" if self.offer else b"") + b"250 8BITMIME\r\n"
                    )
                elif verb == "STARTTLS":
                    self.asked_for_tls += 1
                    writer.write(self.starttls_reply.encode() + b"\r\n")
                    await writer.drain()
                    if not self.starttls_reply.startswith("220"):
                        continue
                    if self.broken:  # answer the client's hello with what is no TLS record, then wait
                        await reader.read(5)
                        writer.write(b"this is not a TLS server hello\r\n")
                        await writer.drain()
                        await reader.read()
                        break
                    if self.hang_up:  # read the client's hello and close the connection
                        await reader.read(5)
                        break
                    await writer.start_tls(self._context())
                    self.handshakes += 1
                elif verb == "QUIT":
                    writer.write(b"221 Bye\r\n")
                    break
                else:
                    writer.write(b"502 5.5.2 Not here\r\n")
                await writer.drain()
        except (OSError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.address, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in self._writers:
                writer.transport.abort()
            await self._server.wait_closed()


@pytest.fixture(scope="module")
def test_ca(tmp_path_factory: pytest.TempPathFactory) -> TestCa:
    return TestCa.create(Path(tmp_path_factory.mktemp("ca")))


@pytest.fixture
def tls(test_ca: TestCa) -> TlsContexts:
    return TlsContexts(opportunistic_tls_context(), verifying_tls_context(str(test_ca.cert_file)))


@pytest.fixture
async def server() -> AsyncIterator[Callable[..., Awaitable[StartTlsServer]]]:
    """`await server(**StartTlsServer options)`: a started server, stopped afterwards."""
    started: list[StartTlsServer] = []

    async def start(**options: object) -> StartTlsServer:
        peer = StartTlsServer(**options)  # type: ignore[arg-type]
        await peer.start()
        started.append(peer)
        return peer

    yield start
    for peer in started:
        await peer.stop()


@pytest.fixture
async def session() -> AsyncIterator[Callable[[StartTlsServer], Awaitable[SMTP]]]:
    """`await session(server)`: an aiosmtplib client connected to the server and greeted with EHLO."""
    clients: list[SMTP] = []

    async def connect(peer: StartTlsServer) -> SMTP:
        smtp = SMTP(hostname=peer.address, port=peer.port, start_tls=False, validate_certs=False, timeout=IO_TIMEOUT)
        await smtp.connect()
        await smtp.ehlo()
        clients.append(smtp)
        return smtp

    yield connect
    for smtp in clients:
        smtp.close()


def route(policy: int, source: str = "test", mx: tuple[str, ...] = ()) -> message_pb2.Route:
    return message_pb2.Route(tls_policy=policy, tls_policy_source=source, mta_sts_mx=list(mx))  # type: ignore[arg-type]


def host(peer: StartTlsServer, name: str = MX) -> message_pb2.RouteHost:
    return message_pb2.RouteHost(hostname=name, address=peer.address, port=peer.port)


async def run(
    smtp: SMTP,
    the_route: message_pb2.Route,
    the_host: message_pb2.RouteHost,
    tls: TlsContexts,
    *,
    allowed: bool = True,
) -> TlsOutcome:
    with message_context("QTLS"):  # the job's, set by the deliverer
        return await negotiate(smtp, the_route, the_host, tls, allowed=allowed, label=LABEL)


Told = tuple[bool, bool, PolicyFailure | None, str | None, bool]
PLAINTEXT: Told = (False, False, None, None, False)
ENCRYPTED: Told = (True, False, None, None, False)
VERIFIED: Told = (True, True, None, None, False)


def told(outcome: TlsOutcome) -> Told:
    """Every field of an outcome: tls, verified, failure, fallback, handshake_failed."""
    return (outcome.tls, outcome.verified, outcome.failure, outcome.fallback, outcome.handshake_failed)


def failed(diagnostic: str, status: str) -> Told:
    return (False, False, PolicyFailure(diagnostic, status, smtp_code=0), None, False)


# -- no STARTTLS at all --


async def test_policy_none_never_asks_for_starttls(server, session, tls, test_ca, metric):
    peer = await server(cert=test_ca.issue(MX))
    before = metric("kubemta_tls_outbound_total", result="plaintext")

    outcome = await run(await session(peer), route(message_pb2.TLS_POLICY_NONE), host(peer), tls)

    assert told(outcome) == PLAINTEXT
    assert peer.asked_for_tls == 0
    assert metric("kubemta_tls_outbound_total", result="plaintext") == before + 1


async def test_the_plaintext_redo_never_asks_for_starttls_even_when_tls_is_required(
    server, session, tls, test_ca, metric
):
    peer = await server(cert=test_ca.issue(MX))
    before = metric("kubemta_tls_outbound_total", result="plaintext")

    outcome = await run(await session(peer), route(message_pb2.TLS_POLICY_ENCRYPT), host(peer), tls, allowed=False)

    assert told(outcome) == PLAINTEXT
    assert peer.asked_for_tls == 0
    assert metric("kubemta_tls_outbound_total", result="plaintext") == before + 1


@pytest.mark.parametrize("policy", [message_pb2.TLS_POLICY_MAY, message_pb2.TLS_POLICY_UNSPECIFIED])
async def test_opportunistic_tls_goes_on_in_plaintext_when_starttls_is_not_offered(
    server, session, tls, policy, metric
):
    peer = await server(offer=False)
    before = metric("kubemta_tls_outbound_total", result="plaintext")

    outcome = await run(await session(peer), route(policy), host(peer), tls)

    assert told(outcome) == PLAINTEXT
    assert peer.asked_for_tls == 0
    assert metric("kubemta_tls_outbound_total", result="plaintext") == before + 1


@pytest.mark.parametrize(
    ("policy", "word"), [(message_pb2.TLS_POLICY_ENCRYPT, "encrypt"), (message_pb2.TLS_POLICY_VERIFY, "verify")]
)
async def test_required_tls_not_offered_fails_the_host_with_4_7_4(server, session, tls, policy, word, metric):
    peer = await server(offer=False)
    before = metric("kubemta_tls_outbound_total", result="not_offered")

    outcome = await run(await session(peer), route(policy, "dane"), host(peer), tls)

    assert told(outcome) == failed(
        f"TLS is required, but was not offered by host {LABEL} (TLS policy {word}, dane)", "4.7.4"
    )
    assert outcome.failure is not None and outcome.failure.smtp_code == 0
    assert metric("kubemta_tls_outbound_total", result="not_offered") == before + 1


async def test_the_diagnostic_leaves_out_an_unknown_policy_source(server, session, tls):
    peer = await server(offer=False)

    outcome = await run(await session(peer), route(message_pb2.TLS_POLICY_ENCRYPT, source=""), host(peer), tls)

    assert told(outcome) == failed(
        f"TLS is required, but was not offered by host {LABEL} (TLS policy encrypt)", "4.7.4"
    )


# -- STARTTLS refused --


async def test_required_tls_refused_fails_the_host_with_4_7_4_quoting_the_reply(server, session, tls, metric):
    peer = await server(starttls_reply="454 4.7.0 TLS not available due to temporary reason")
    before = metric("kubemta_tls_outbound_total", result="not_offered")

    outcome = await run(await session(peer), route(message_pb2.TLS_POLICY_ENCRYPT), host(peer), tls)

    assert told(outcome) == failed(
        f"TLS is required, but host {LABEL} refused STARTTLS: 454 4.7.0 TLS not available due to temporary reason"
        " (TLS policy encrypt, test)",
        "4.7.4",
    )
    assert peer.asked_for_tls == 1
    assert metric("kubemta_tls_outbound_total", result="not_offered") == before + 1


async def test_opportunistic_tls_refused_goes_on_in_plaintext_and_says_so(server, session, tls, metric, caplog):
    peer = await server(starttls_reply="454 4.7.0 TLS not available")
    before = metric("kubemta_tls_outbound_total", result="plaintext")

    with caplog.at_level(logging.INFO, logger="kubemta_delivery_worker.tls_negotiation"):
        outcome = await run(await session(peer), route(message_pb2.TLS_POLICY_MAY), host(peer), tls)

    assert told(outcome) == PLAINTEXT
    assert peer.asked_for_tls == 1
    assert metric("kubemta_tls_outbound_total", result="plaintext") == before + 1
    [record] = caplog.records
    assert record.levelno == logging.INFO
    assert record.getMessage() == f"{LABEL} refused STARTTLS (454 4.7.0 TLS not available); continuing in plaintext"
    assert (record.queue_id, record.host) == ("QTLS", LABEL)


# -- STARTTLS that succeeds --


@pytest.mark.parametrize(
    "policy", [message_pb2.TLS_POLICY_MAY, message_pb2.TLS_POLICY_UNSPECIFIED, message_pb2.TLS_POLICY_ENCRYPT]
)
async def test_unverified_tls_accepts_any_certificate_and_sends_the_host_name(
    server, session, tls, tmp_path, policy, metric
):
    peer = await server(cert=make_self_signed_cert(tmp_path, "some.other.name"))
    before = metric("kubemta_tls_outbound_total", result="encrypted")

    outcome = await run(await session(peer), route(policy), host(peer, " MX1.Dest.BOX. "), tls)

    assert told(outcome) == ENCRYPTED
    assert peer.sni == ["MX1.Dest.BOX"], "blanks and the root dot taken off, nothing else"
    assert metric("kubemta_tls_outbound_total", result="encrypted") == before + 1


async def test_unverified_tls_to_a_host_without_a_name_sends_no_name(server, session, tls, tmp_path):
    peer = await server(cert=make_self_signed_cert(tmp_path, "mx.peer.test"))

    outcome = await run(await session(peer), route(message_pb2.TLS_POLICY_ENCRYPT), host(peer, ""), tls)

    assert told(outcome) == ENCRYPTED
    assert peer.sni == [None]


async def test_verify_accepts_a_ca_signed_certificate_for_the_host_name(server, session, tls, test_ca, metric):
    peer = await server(cert=test_ca.issue(MX))
    before = metric("kubemta_tls_outbound_total", result="verified")

    outcome = await run(await session(peer), route(message_pb2.TLS_POLICY_VERIFY), host(peer, MX + "."), tls)

    assert told(outcome) == VERIFIED
    assert peer.sni == [MX]
    assert metric("kubemta_tls_outbound_total", result="verified") == before + 1


async def test_verify_checks_the_host_name_not_only_the_chain(server, session, tls, test_ca, metric):
    peer = await server(cert=test_ca.issue("other.dest.test"))
    before = metric("kubemta_tls_outbound_total", result="verify_failed")

    outcome = await run(await session(peer), route(message_pb2.TLS_POLICY_VERIFY), host(peer), tls)

    assert outcome.failure is not None
    assert outcome.failure.status == "4.7.5"
    assert outcome.failure.diagnostic == (
        f"TLS is required, but the certificate of host {LABEL} could not be verified: "
        f"Hostname mismatch, certificate is not valid for '{MX}'. (TLS policy verify, test)"
    )
    assert (outcome.tls, outcome.verified, outcome.fallback, outcome.handshake_failed) == (False, False, None, True)
    assert metric("kubemta_tls_outbound_total", result="verify_failed") == before + 1


async def test_verify_of_a_host_without_a_name_checks_the_routes_address(server, session, tls, test_ca):
    peer = await server(cert=test_ca.issue(MX))
    no_name = message_pb2.RouteHost(address="192.0.2.25", port=peer.port)  # not the address the client dialled

    outcome = await run(await session(peer), route(message_pb2.TLS_POLICY_VERIFY), no_name, tls)

    diagnostic = (
        f"TLS is required, but the certificate of host {LABEL} could not be verified: "
        "IP address mismatch, certificate is not valid for '192.0.2.25'. (TLS policy verify, test)"
    )
    assert told(outcome) == (False, False, PolicyFailure(diagnostic, "4.7.5", smtp_code=0), None, True)


async def test_verify_uses_the_verifying_context_and_the_others_the_opportunistic_one(server, session, tmp_path):
    cert = make_self_signed_cert(tmp_path, MX)
    peer = await server(cert=cert)
    trusts_only_the_peer = verifying_tls_context(str(cert[0]))

    verified = await run(
        await session(peer),
        route(message_pb2.TLS_POLICY_VERIFY),
        host(peer),
        TlsContexts(_strict(), trusts_only_the_peer),
    )
    encrypted = await run(
        await session(peer),
        route(message_pb2.TLS_POLICY_ENCRYPT),
        host(peer),
        TlsContexts(_strict(), opportunistic_tls_context()),
    )

    assert told(verified) == VERIFIED
    assert encrypted.failure is not None and "self-signed certificate" in encrypted.failure.diagnostic


def _strict() -> ssl.SSLContext:
    """A context trusting only the system's CAs, which know none of the test certificates."""
    return ssl.create_default_context()


# -- a failed handshake --


async def test_a_failed_opportunistic_handshake_asks_for_a_plaintext_redo(server, session, tls, test_ca, metric):
    peer = await server(cert=test_ca.issue(MX), broken=True)
    before = metric("kubemta_tls_outbound_total", result="handshake_failed")

    outcome = await run(await session(peer), route(message_pb2.TLS_POLICY_MAY), host(peer), tls)

    assert told(outcome) == (False, False, None, "TLS error: WRONG_VERSION_NUMBER", True)
    assert metric("kubemta_tls_outbound_total", result="handshake_failed") == before + 1


async def test_a_failed_required_handshake_fails_the_host_with_4_7_5(server, session, tls, test_ca, metric):
    peer = await server(cert=test_ca.issue(MX), broken=True)
    before = metric("kubemta_tls_outbound_total", result="handshake_failed")

    outcome = await run(await session(peer), route(message_pb2.TLS_POLICY_ENCRYPT), host(peer), tls)

    diagnostic = (
        f"TLS is required, but the TLS handshake with host {LABEL} failed: TLS error: WRONG_VERSION_NUMBER"
        " (TLS policy encrypt, test)"
    )
    assert told(outcome) == (False, False, PolicyFailure(diagnostic, "4.7.5", smtp_code=0), None, True)
    assert metric("kubemta_tls_outbound_total", result="handshake_failed") == before + 1


async def test_a_peer_hanging_up_in_the_handshake_is_a_failed_handshake_named_by_the_client(
    server, session, tls, test_ca
):
    peer = await server(cert=test_ca.issue(MX), hang_up=True)

    outcome = await run(await session(peer), route(message_pb2.TLS_POLICY_MAY), host(peer), tls)

    assert told(outcome) == (False, False, None, "Connection reset while upgrading transport", True)


class FailingStartTls(SMTP):
    """aiosmtplib's client whose STARTTLS raises `error`: the failures a client library may report
    (a certificate error wrapped in its own exception, a bare OSError) without a server to cause them."""

    def __init__(self, error: BaseException, **options: object) -> None:
        super().__init__(**options)  # type: ignore[arg-type]
        self.error = error

    async def starttls(self, *args: object, **kwargs: object) -> SMTPResponse:
        raise self.error


async def failing_session(peer: StartTlsServer, error: BaseException) -> SMTP:
    smtp = FailingStartTls(error, hostname=peer.address, port=peer.port, start_tls=False, timeout=IO_TIMEOUT)
    await smtp.connect()
    await smtp.ehlo()
    return smtp


def expired_certificate() -> ssl.SSLCertVerificationError:
    error = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed")
    error.verify_message = "certificate has expired"
    return error


def raised_from(certificate: ssl.SSLCertVerificationError) -> SMTPException:
    wrapped = SMTPException("handshake failed")
    wrapped.__cause__ = certificate
    return wrapped


def raised_while_handling(certificate: ssl.SSLCertVerificationError) -> SMTPException:
    wrapped = SMTPException("handshake failed")
    wrapped.__context__ = certificate
    return wrapped


@pytest.mark.parametrize("wrap", [raised_from, raised_while_handling])
async def test_a_certificate_error_wrapped_by_the_client_is_still_a_certificate_error(
    server, tls, test_ca, wrap, metric
):
    peer = await server(cert=test_ca.issue(MX))
    before = metric("kubemta_tls_outbound_total", result="verify_failed")
    smtp = await failing_session(peer, wrap(expired_certificate()))

    outcome = await run(smtp, route(message_pb2.TLS_POLICY_VERIFY), host(peer), tls)
    smtp.close()

    diagnostic = (
        f"TLS is required, but the certificate of host {LABEL} could not be verified: certificate has expired"
        " (TLS policy verify, test)"
    )
    assert told(outcome) == (False, False, PolicyFailure(diagnostic, "4.7.5", smtp_code=0), None, True)
    assert metric("kubemta_tls_outbound_total", result="verify_failed") == before + 1


@pytest.mark.parametrize(("error", "said"), [(OSError("No route to host"), "No route to host"), (OSError(), "OSError")])
async def test_another_failure_in_the_handshake_is_named_by_its_text_or_else_its_type(
    server, tls, test_ca, error, said
):
    peer = await server(cert=test_ca.issue(MX))
    smtp = await failing_session(peer, error)

    outcome = await run(smtp, route(message_pb2.TLS_POLICY_MAY), host(peer), tls)
    smtp.close()

    assert told(outcome) == (False, False, None, said, True)


# -- MTA-STS mx patterns --


async def test_a_host_outside_the_mta_sts_patterns_is_refused_before_starttls(server, session, tls, test_ca, metric):
    peer = await server(cert=test_ca.issue("mx.elsewhere.test"))
    before = metric("kubemta_tls_outbound_total", result="mx_mismatch")
    policy = route(message_pb2.TLS_POLICY_VERIFY, "mta-sts", ("*.dest.test", "mx.backup.test"))

    outcome = await run(await session(peer), policy, host(peer, "mx.elsewhere.test"), tls)

    assert told(outcome) == failed(
        f"TLS is required, but host {LABEL} matches none of the MTA-STS mx patterns (*.dest.test, mx.backup.test)"
        " (TLS policy verify, mta-sts)",
        "4.7.5",
    )
    assert peer.asked_for_tls == 0
    assert metric("kubemta_tls_outbound_total", result="mx_mismatch") == before + 1


async def test_a_host_inside_the_mta_sts_patterns_goes_on_to_starttls(server, session, tls, test_ca):
    peer = await server(cert=test_ca.issue(MX))
    policy = route(message_pb2.TLS_POLICY_VERIFY, "mta-sts", ("*.dest.test",))

    outcome = await run(await session(peer), policy, host(peer, " MX1.Dest.Test. "), tls)

    assert told(outcome) == VERIFIED


# -- names and contexts --


@pytest.mark.parametrize(
    ("policy", "word"),
    [
        (message_pb2.TLS_POLICY_NONE, "none"),
        (message_pb2.TLS_POLICY_MAY, "may"),
        (message_pb2.TLS_POLICY_UNSPECIFIED, "may"),
        (message_pb2.TLS_POLICY_ENCRYPT, "encrypt"),
        (message_pb2.TLS_POLICY_VERIFY, "verify"),
    ],
)
def test_policy_names(policy, word):
    assert policy_name(route(policy)) == word


def test_the_status_codes_are_postfixs():
    assert (STATUS_TLS_NOT_OFFERED, STATUS_TLS_FAILED) == ("4.7.4", "4.7.5")


def test_default_contexts_encrypt_without_checks_and_verify_against_the_system_cas():
    defaults = contexts()

    assert defaults.opportunistic.verify_mode == ssl.CERT_NONE
    assert defaults.opportunistic.check_hostname is False
    assert defaults.verifying.verify_mode == ssl.CERT_REQUIRED
    assert defaults.verifying.check_hostname is True
    assert contexts().verifying is defaults.verifying, "the system's CAs are loaded once"


def test_given_contexts_are_used():
    opportunistic, verifying = opportunistic_tls_context(), verifying_tls_context()

    given = contexts(opportunistic, verifying)

    assert (given.opportunistic, given.verifying) == (opportunistic, verifying)
