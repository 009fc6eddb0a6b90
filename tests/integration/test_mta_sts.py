"""MTA-STS end to end without the bus: a real DNS zone (NSD) with `_mta-sts` TXT and MX records, a local
HTTPS policy server with a certificate from a test CA, the real resolver Router, and the real delivery
code against STARTTLS peers (certificates from the same CA).

- sts.test: policy enforce, mx: mx1.sts.test; MX mx1 (matching) and mx2 (not matching).
- nomatch.sts.test: policy enforce, mx: mx1.sts.test, but its only MX is mx2: no usable host.
"""

import asyncio
import gzip
import http.server
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from kubemta.v1 import message_pb2
from kubemta_common.config_types import parse_nameserver
from kubemta_delivery_worker.deliverer import Deliverer
from kubemta_delivery_worker.tls import opportunistic_tls_context, verifying_tls_context
from kubemta_delivery_worker.transaction import SmtpOptions
from kubemta_dns_resolver.__main__ import build_router
from kubemta_dns_resolver.router import RouteFailure
from kubemta_dns_resolver.settings import ResolverSettings
from tests.harness.dns_server import DnsServer, free_port, random_loopback_address, zone_text
from tests.harness.ports import random_loopback_net
from tests.harness.smtp_peer import ScriptedPeer
from tests.harness.tls_ca import TestCa

ZONE = "sts.test"
POLICIES = {
    "mta-sts.sts.test": "version: STSv1\nmode: enforce\nmx: mx1.sts.test\nmax_age: 86400\n",
    "mta-sts.nomatch.sts.test": "version: STSv1\nmode: enforce\nmx: mx1.sts.test\nmax_age: 86400\n",
}
# Policy hosts whose answer is broken: a body that claims gzip but is not (httpx raised DecodingError, which
# nothing caught: the route job crashed the resolver on every redelivery), and a well-formed gzip body, which
# kubemta does not ask for (Accept-Encoding: identity) and does not take either (no decompression bombs).
BROKEN_GZIP = {
    "mta-sts.badgzip.sts.test": b"\x1f\x8b\x08\x00 this is not deflate data at all",
    "mta-sts.gzip.sts.test": gzip.compress(POLICIES["mta-sts.sts.test"].encode()),
}


class _PolicyHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server hook name
        host = (self.headers.get("Host") or "").rsplit(":", 1)[0]
        if host in BROKEN_GZIP:
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(BROKEN_GZIP[host])))
            self.end_headers()
            self.wfile.write(BROKEN_GZIP[host])
            return
        body = POLICIES.get(host)
        if self.path != "/.well-known/mta-sts.txt" or body is None:
            self.send_error(404)
            return
        data = body.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - keep test output quiet
        pass


@pytest.fixture(scope="module")
def net() -> str:
    return random_loopback_net()


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> TestCa:
    return TestCa.create(Path(tmp_path_factory.mktemp("ca")))


@pytest.fixture(scope="module")
def policy_server(net: str, ca: TestCa) -> Iterator[tuple[str, int]]:
    address = f"{net}.80"
    server = http.server.ThreadingHTTPServer((address, 0), _PolicyHandler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*ca.issue(*POLICIES, *BROKEN_GZIP))
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield address, server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture(scope="module")
def dns(tmp_path_factory: pytest.TempPathFactory, net: str, policy_server: tuple[str, int]) -> Iterator[DnsServer]:
    https_address = policy_server[0]
    records = [
        "@ MX 10 mx1",
        "@ MX 20 mx2",
        f"mx1 A {net}.11",
        f"mx2 A {net}.12",
        '_mta-sts TXT "v=STSv1; id=20240101"',
        f"mta-sts A {https_address}",
        "nomatch MX 10 mx2",
        '_mta-sts.nomatch TXT "v=STSv1; id=1"',
        f"mta-sts.nomatch A {https_address}",
        *(f"{name} MX 10 mx1" for name in ("badgzip", "gzip")),
        *(f'_mta-sts.{name} TXT "v=STSv1; id=7"' for name in ("badgzip", "gzip")),
        *(f"mta-sts.{name} A {https_address}" for name in ("badgzip", "gzip")),
    ]
    address = random_loopback_address()
    server = DnsServer(
        Path(tmp_path_factory.mktemp("nsd")), address, free_port(address), {ZONE: zone_text(ZONE, records)}
    )
    with server:
        yield server


def make_router(dns: DnsServer, port: int, https_port: int, ca: TestCa):
    return build_router(
        ResolverSettings(
            dns_nameservers=[parse_nameserver(dns.nameserver)],
            dns_timeout=3.0,
            delivery_port=port,
            mta_sts_port=https_port,
            mta_sts_ca_file=str(ca.cert_file),
            mta_sts_timeout=5.0,
        )
    )


async def test_enforce_routes_and_delivers_only_to_matching_verified_mx(dns, policy_server, ca, net):
    mx1 = ScriptedPeer(f"{net}.11", 0, tls_cert=ca.issue("mx1.sts.test"))
    await mx1.start()
    mx2 = ScriptedPeer(f"{net}.12", mx1.port, tls_cert=ca.issue("mx2.sts.test"))
    await mx2.start()
    try:
        router = make_router(dns, mx1.port, policy_server[1], ca)
        async with asyncio.timeout(20):
            route = await router.route("sts.test")
            failure = await router.route("nomatch.sts.test")

        assert isinstance(route, message_pb2.Route), route
        assert [host.hostname for host in route.hosts] == ["mx1.sts.test"]
        assert route.tls_policy == message_pb2.TLS_POLICY_VERIFY
        assert list(route.mta_sts_mx) == ["mx1.sts.test"]
        assert isinstance(failure, RouteFailure) and failure.temporary and failure.status == "4.7.5"
        assert "mx2.sts.test" in failure.diagnostic

        options = SmtpOptions(
            ehlo_name="worker.kubemta.test",
            tls_context=opportunistic_tls_context(),
            connect_timeout=2.0,
            command_timeout=5.0,
            data_timeout=5.0,
            verify_tls_context=verifying_tls_context(str(ca.cert_file)),
        )
        # The worker checks the patterns itself: mx2 put back in front is refused, mx1 is used.
        route.hosts.insert(0, message_pb2.RouteHost(hostname="mx2.sts.test", address=mx2.address, port=mx2.port))
        job = message_pb2.DeliveryJob(
            queue_id="QSTS1", job_id="QSTS1.sts.test", sender="a@sender.test", domain="sts.test",
            recipients=["bob@sts.test"], content=b"Subject: sts\r\n\r\nhi\r\n", route=route,
        )  # fmt: skip
        async with asyncio.timeout(20):
            [result] = await Deliverer(options).deliver(job)

        assert result.outcome == message_pb2.OUTCOME_DELIVERED, result
        assert [message.tls for message in mx1.messages] == [True]
        assert mx2.connections == 1 and mx2.messages == []
    finally:
        await mx1.stop()
        await mx2.stop()


async def test_untrusted_policy_server_certificate_means_no_policy(dns, policy_server, net, tmp_path):
    other_ca = TestCa.create(tmp_path / "other")
    router = make_router(dns, 2525, policy_server[1], other_ca)
    async with asyncio.timeout(20):
        route = await router.route("sts.test")
    assert isinstance(route, message_pb2.Route)
    assert route.tls_policy == message_pb2.TLS_POLICY_UNSPECIFIED  # §5: as if the domain had no policy
    assert len(route.hosts) == 2


@pytest.mark.parametrize("domain", ["badgzip.sts.test", "gzip.sts.test"])
async def test_a_compressed_or_broken_policy_body_is_a_failed_fetch(dns, policy_server, ca, domain):
    """Any failure of a fetch is a failed fetch (RFC 8461 §5: as if there were no policy), never an exception."""
    router = make_router(dns, 2525, policy_server[1], ca)
    async with asyncio.timeout(20):
        route = await router.route(domain)
        again = await router.route(domain)  # the failure is remembered, not retried on every job
    assert isinstance(route, message_pb2.Route), route
    assert route.tls_policy == message_pb2.TLS_POLICY_UNSPECIFIED
    assert list(route.mta_sts_mx) == []
    assert isinstance(again, message_pb2.Route)
