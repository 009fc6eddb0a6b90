"""The world the end-to-end tests deliver into: a real DNS server (nsd) serving a test
zone whose mail hosts are loopback addresses of this run, SMTP peers started per test on
those addresses, and the four services as processes configured to use them."""

import asyncio
import smtplib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.harness.dns_server import DnsServer, zone_text
from tests.harness.ports import free_port
from tests.harness.smtp_peer import ScriptedPeer
from tests.harness.stack import Stack

ZONE = "e2e.test"
SERVFAIL_ZONE = "broken.test"

# host name -> last octet of its loopback address in this run's 127.a.b.0/24
HOSTS = {
    "mx1": 11, "mx2": 12, "mx3": 13,
    "dead": 21, "alive": 22,
    "implicit": 31,
    "bounce-mx": 41,
    "ns": 53,
}  # fmt: skip

RECORDS = [
    # mx.e2e.test: two MX at different preferences
    "mx MX 10 mx1", "mx MX 20 mx2",
    # fallback.e2e.test: the preferred MX refuses connections (nothing listens there)
    "fallback MX 10 dead", "fallback MX 20 alive",
    # other.e2e.test: a second destination domain
    "other MX 10 mx3",
    # sender.e2e.test: where bounces to our test senders arrive
    "sender MX 10 bounce-mx",
    # nullmx.e2e.test: RFC 7505 null MX
    "nullmx MX 0 .",
]  # fmt: skip


@dataclass
class MailWorld:
    net: str
    dns: DnsServer
    delivery_port: int
    workdir: Path
    peers: list[ScriptedPeer] = field(default_factory=list)

    def address(self, host: str) -> str:
        return f"{self.net}.{HOSTS[host]}"

    def peer(self, host: str, **options: object) -> ScriptedPeer:
        """An SMTP peer (not yet started) at `host`'s address on the delivery port."""
        peer = ScriptedPeer(self.address(host), self.delivery_port, hostname=f"{host}.{ZONE}", **options)  # type: ignore[arg-type]
        self.peers.append(peer)
        return peer

    def env(self, **overrides: str) -> dict[str, str]:
        """Environment shared by the four services for this world (fast retries for tests)."""
        env = {
            "KUBEMTA_HOSTNAME": "mta.kubemta.test",
            "KUBEMTA_DNS_NAMESERVERS": self.dns.nameserver,
            "KUBEMTA_DNS_TIMEOUT": "3s",
            "KUBEMTA_DELIVERY_PORT": str(self.delivery_port),
            "KUBEMTA_RETRY_SCHEDULE": "1s",
            "KUBEMTA_DSN_BATCH_WINDOW": "1s",  # bounces of one message's jobs: one DSN, sent a second later
            "KUBEMTA_PUBLISH_TIMEOUT": "3s",
            "KUBEMTA_AMQP_RECONNECT_INTERVAL": "0.5s",
            "KUBEMTA_DRAIN_SECONDS": "5s",
            "KUBEMTA_SMTP_CONNECT_TIMEOUT": "3s",
            "KUBEMTA_RELAY_NETWORKS": "127.0.0.0/8",
            # some tests send many refused messages in one session on purpose; the error
            # limit itself is tested in services/ingress/tests/test_ingress_limits.py
            "KUBEMTA_MAX_ERRORS": "1000",
        }
        env.update({f"KUBEMTA_{key.upper()}": value for key, value in overrides.items()})
        return env


@pytest.fixture(scope="session")
def dns_server(tmp_path_factory: pytest.TempPathFactory, loopback_net: str) -> Iterator[DnsServer]:
    records = [*RECORDS, *(f"{host} A {loopback_net}.{octet}" for host, octet in HOSTS.items())]
    records.append(f"implicit A {loopback_net}.{HOSTS['implicit']}")
    ns_address = f"{loopback_net}.{HOSTS['ns']}"
    server = DnsServer(
        tmp_path_factory.mktemp("dns"),
        ns_address,
        free_port(ns_address),
        zones={ZONE: zone_text(ZONE, sorted(set(records)), ttl=30)},
        servfail_zones=[SERVFAIL_ZONE],
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def world(dns_server: DnsServer, loopback_net: str, tmp_path: Path) -> AsyncIterator[MailWorld]:
    world = MailWorld(loopback_net, dns_server, free_port(), tmp_path)
    try:
        yield world
    finally:
        for peer in world.peers:
            await peer.stop()


@pytest.fixture
async def mta(stack: Stack, world: MailWorld) -> AsyncIterator[tuple[Stack, str]]:
    """The four services running against this test's vhost and world; yields (stack, smtp address)."""
    smtp_port = free_port()
    stack.env.update(world.env(smtp_listen=f"127.0.0.1:{smtp_port}"))
    await stack.start()
    yield stack, f"127.0.0.1:{smtp_port}"


@dataclass
class SmtpOutcome:
    """What the server answered at each step of one transaction."""

    mail: tuple[int, bytes]
    rcpts: list[tuple[int, bytes]]
    data: tuple[int, bytes] | None


def _send_sync(
    server: str, sender: str, recipients: list[str], message: bytes, source: str | None = None
) -> SmtpOutcome:
    host, port = server.rsplit(":", 1)
    with smtplib.SMTP(host, int(port), timeout=30, source_address=(source, 0) if source else None) as client:
        client.ehlo("client.e2e.test")
        mail = client.mail(sender)
        rcpts = [client.rcpt(rcpt) for rcpt in recipients]
        data = client.data(message) if any(code == 250 for code, _ in rcpts) else None
        return SmtpOutcome(mail, rcpts, data)


async def send(
    server: str, sender: str, recipients: list[str], message: bytes, *, source: str | None = None
) -> SmtpOutcome:
    """One SMTP transaction with Python's smtplib (in a thread, so loop-hosted peers keep serving);
    `source` is the loopback address to connect from (the client address the ingress sees)."""
    return await asyncio.to_thread(_send_sync, server, sender, recipients, message, source)


def make_message(sender: str, recipients: list[str], subject: str, body: str = "Hello from the e2e test.\r\n") -> bytes:
    headers = (
        f"From: <{sender or 'mailer-daemon@e2e.test'}>\r\nTo: {', '.join(f'<{r}>' for r in recipients)}\r\n"
        f"Subject: {subject}\r\nMessage-ID: <{subject.replace(' ', '-')}@e2e.test>\r\n"
        "Date: Sun, 29 Nov 2026 12:00:00 +0000\r\n"
    )
    return (headers + "\r\n" + body).encode()
