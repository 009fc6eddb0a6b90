"""The ingress HTTP API's domain check over real HTTP (uvicorn on a free loopback port, httpx as the client)
against a real name server (NSD): reports, invalid names, JSON errors, the metric, the bearer token
(KUBEMTA_API_TOKEN: none, wrong, right; no token configured closes the API), and the service wiring
(KUBEMTA_HTTP_LISTEN starts the API with the ingress, with the token it is given, and stops it on shutdown)."""

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client import REGISTRY

from kubemta_common.config_types import ListenAddress
from kubemta_common.errors import ConfigError
from kubemta_common.http_server import HttpServer
from kubemta_ingress import check_service as check_service_module
from kubemta_ingress.__main__ import serve
from kubemta_ingress.api import app_from_settings
from kubemta_ingress.settings import IngressSettings
from kubemta_mail_auth.domain_check import DomainReport, Status
from tests.harness import domain_zone as dz
from tests.harness.api_kit import AUTH, TOKEN
from tests.harness.dns_server import DnsServer, free_port, random_loopback_address
from tests.harness.ports import free_port as free_tcp_port

IO_TIMEOUT = 20.0


@pytest.fixture(scope="module")
def zone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DnsServer, dz.DomainZones]]:
    address = random_loopback_address()
    zones = dz.build_zones(Path(tmp_path_factory.mktemp("dkim")) / "keys", address.rsplit(".", 1)[0])
    with DnsServer(Path(tmp_path_factory.mktemp("nsd")), address, free_port(address), zones.zones) as server:
        yield server, zones


def environment(zone: tuple[DnsServer, dz.DomainZones]) -> dict[str, str]:
    server, zones = zone
    return {
        "KUBEMTA_HOSTNAME": dz.HOSTNAME,
        "KUBEMTA_SENDING_IPS": str(zones.sending_ip),
        "KUBEMTA_DKIM_KEYS_DIR": str(zones.public_keys_dir),
        "KUBEMTA_DNS_NAMESERVERS": server.nameserver,
        "KUBEMTA_DNS_TIMEOUT": "3s",
        "KUBEMTA_API_TOKEN": TOKEN,
    }


@pytest.fixture
async def base_url(zone, monkeypatch) -> AsyncIterator[str]:
    """The API app (configured from the environment, as the service does) served by uvicorn on a free port."""
    for name, value in environment(zone).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("KUBEMTA_API_CACHE_TTL", "0")  # every request checks afresh (the cache: test_ingress_api_limits)
    settings = IngressSettings.load()
    listen = ListenAddress("127.0.0.1", free_tcp_port())
    server = HttpServer(app_from_settings(settings), listen)
    async with asyncio.timeout(IO_TIMEOUT):
        await server.start()
    try:
        yield f"http://{listen}"
    finally:
        async with asyncio.timeout(IO_TIMEOUT):
            await server.stop()


async def get(url: str, headers: dict[str, str] | None = None) -> httpx.Response:
    async with httpx.AsyncClient(timeout=IO_TIMEOUT) as client:
        return await client.get(url, headers=AUTH if headers is None else headers)


def checks_total(result: str) -> float:
    return REGISTRY.get_sample_value("kubemta_domain_checks_total", {"result": result}) or 0.0


async def test_a_correct_domain_reports_ok(base_url, zone):
    assert not list(zone[1].public_keys_dir.rglob("*.key"))  # public keys only, as the chart mounts them
    before = checks_total("ok")
    response = await get(f"{base_url}/v1/domains/{dz.GOOD}/check")
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    report = DomainReport.model_validate(response.json())
    assert report.ok and report.domain == dz.GOOD
    assert {c.name for c in report.checks} >= {"dkim:s1", "dkim:r1", "spf", "dmarc", "mx", "hostname"}
    assert f"({dz.GOOD}/s1.pub)" in next(c.detail for c in report.checks if c.name == "dkim:s1")
    assert checks_total("ok") - before == 1


async def test_a_broken_domain_is_still_200_with_the_problem_and_the_record_to_publish(base_url):
    before = checks_total("problems")
    response = await get(f"{base_url}/v1/domains/{dz.NO_DMARC.upper()}./check")
    assert response.status_code == 200
    body = response.json()
    assert body["ok"] is False and body["domain"] == dz.NO_DMARC
    (dmarc,) = [c for c in body["checks"] if c["name"] == "dmarc"]
    assert dmarc["status"] == "missing" and dmarc["found"] == []
    assert dmarc["expected"] == f'_dmarc.{dz.NO_DMARC}. IN TXT "v=DMARC1; p=none; rua=mailto:postmaster@{dz.NO_DMARC}"'
    assert [c["name"] for c in body["checks"] if c["status"] != Status.OK] == ["dmarc"]
    assert checks_total("problems") - before == 1


async def test_a_unicode_domain_is_checked_as_its_a_label(base_url):
    response = await get(f"{base_url}/v1/domains/b%C3%BCcher.dc.test/check")
    assert response.status_code == 200 and response.json()["domain"] == "xn--bcher-kva.dc.test"


@pytest.mark.parametrize(
    ("domain", "message"),
    [
        ("a..dc.test", "empty label"),
        ("exa_mple.dc.test", "invalid label"),
        ("localhost", "not a fully qualified domain name"),
        ("x" * 64 + ".dc.test", "longer than 63"),
        ("192.0.2.1", "IP address"),
        ("%EF%BD%85xample.com", "IDNA"),
    ],
)
async def test_an_invalid_domain_is_a_422_json_error(base_url, domain, message):
    before = checks_total("invalid")
    response = await get(f"{base_url}/v1/domains/{domain}/check")
    assert response.status_code == 422 and response.headers["content-type"] == "application/json"
    assert set(response.json()) == {"detail"} and message in response.json()["detail"]
    assert response.json()["detail"].startswith("invalid domain name: ")
    assert checks_total("invalid") - before == 1


async def test_errors_are_json_never_a_traceback(base_url, monkeypatch, caplog):
    response = await get(f"{base_url}/v1/nothing")
    assert response.status_code == 404 and response.json() == {"detail": "Not Found"}

    async def broken(*args: object) -> DomainReport:
        raise RuntimeError("internal secret")

    monkeypatch.setattr(check_service_module, "check_domain", broken)
    with caplog.at_level(logging.ERROR):
        response = await get(f"{base_url}/v1/domains/{dz.GOOD}/check")
    assert response.status_code == 500 and response.json() == {"detail": "internal error"}
    assert "internal secret" not in response.text and "Traceback" not in response.text
    assert "internal secret" in caplog.text  # the server log has it


async def test_no_token_is_401_with_the_bearer_challenge(base_url):
    before = checks_total("unauthorized")
    for headers in ({}, {"Authorization": f"Basic {TOKEN}"}, {"Authorization": TOKEN}, {"Authorization": "Bearer"}):
        response = await get(f"{base_url}/v1/domains/{dz.GOOD}/check", headers)
        assert response.status_code == 401 and response.headers["content-type"] == "application/json"
        assert response.headers["www-authenticate"] == 'Bearer realm="kubemta"'  # RFC 6750 §3.1: no error code
        assert response.json() == {"detail": "a bearer token is required: Authorization: Bearer <token>"}
    assert checks_total("unauthorized") - before == 4


async def test_a_wrong_token_is_401_invalid_token(base_url):
    before = checks_total("unauthorized")
    for wrong in (TOKEN[:-1], TOKEN + "x", TOKEN.upper(), "a" * len(TOKEN), f"{TOKEN} {TOKEN}"):
        response = await get(f"{base_url}/v1/domains/{dz.GOOD}/check", {"Authorization": f"Bearer {wrong}"})
        assert response.status_code == 401, wrong
        assert response.headers["www-authenticate"] == (
            'Bearer realm="kubemta", error="invalid_token", error_description="the token is not valid"'
        )
        assert response.json() == {"detail": "the bearer token is not valid"} and TOKEN not in response.text
    assert checks_total("unauthorized") - before == 5


async def test_the_right_token_in_any_scheme_case_is_served(base_url):
    for scheme in ("Bearer", "bearer", "BEARER"):
        response = await get(f"{base_url}/v1/domains/{dz.GOOD}/check", {"Authorization": f"{scheme} {TOKEN}"})
        assert response.status_code == 200 and response.json()["ok"] is True


async def test_an_unauthenticated_caller_learns_nothing_about_the_name(base_url):
    """The token is checked before the name: a bad name without a token is 401, not 422."""
    response = await get(f"{base_url}/v1/domains/a..dc.test/check", {})
    assert response.status_code == 401


def test_settings_defaults_and_validation(monkeypatch):
    settings = IngressSettings()
    assert str(settings.http_listen) == "127.0.0.1:8080" and settings.sending_ips == []
    assert (settings.dkim_keys_dir, settings.dns_nameservers, settings.dns_timeout) == (None, [], 10.0)
    assert settings.api_token is None
    assert (settings.api_checks_per_minute, settings.api_check_burst, settings.api_max_concurrent_checks) == (30, 10, 4)
    assert (settings.api_check_timeout, settings.api_cache_ttl, settings.api_cache_size) == (30.0, 60.0, 1000)
    monkeypatch.setenv("KUBEMTA_HTTP_LISTEN", "")
    monkeypatch.setenv("KUBEMTA_SENDING_IPS", "192.0.2.1, 2001:db8::1")
    monkeypatch.setenv("KUBEMTA_DNS_NAMESERVERS", "10.96.0.10,[::1]:5353")
    settings = IngressSettings.load()
    assert settings.http_listen is None and [str(ip) for ip in settings.sending_ips] == ["192.0.2.1", "2001:db8::1"]
    assert settings.dns_nameservers == [("10.96.0.10", 53), ("::1", 5353)]
    monkeypatch.setenv("KUBEMTA_SENDING_IPS", "192.0.2.1,mta.example.com")
    monkeypatch.setenv("KUBEMTA_DNS_NAMESERVERS", "dns.example.net")
    with pytest.raises(ConfigError) as error:
        IngressSettings.load()
    assert "KUBEMTA_SENDING_IPS" in str(error.value) and "'mta.example.com'" in str(error.value)
    assert "KUBEMTA_DNS_NAMESERVERS" in str(error.value)


async def run_service(zone, monkeypatch, **extra: str) -> tuple[asyncio.Event, asyncio.Task[None], int]:
    """`serve()` (the `kubemta-ingress` coroutine) with its API on a free port; SMTP off, no broker needed."""
    api_port, metrics_port = free_tcp_port(), free_tcp_port()
    for name, value in {
        **environment(zone),
        "KUBEMTA_AMQP_URL": "amqp://guest:guest@127.0.0.1:1/",  # nothing listens: the API does not need the broker
        "KUBEMTA_AMQP_RECONNECT_INTERVAL": "0.1s",
        "KUBEMTA_SMTP_LISTEN": "",
        "KUBEMTA_METRICS_LISTEN": f"127.0.0.1:{metrics_port}",
        "KUBEMTA_HTTP_LISTEN": f"127.0.0.1:{api_port}",
        "KUBEMTA_DRAIN_SECONDS": "1s",
        **extra,
    }.items():
        monkeypatch.setenv(name, value)
    stop = asyncio.Event()
    return stop, asyncio.create_task(serve(stop)), api_port


async def first_answer(service: asyncio.Task[None], url: str, headers: dict[str, str]) -> httpx.Response:
    async with asyncio.timeout(IO_TIMEOUT), httpx.AsyncClient(timeout=IO_TIMEOUT) as client:
        while True:
            assert not service.done(), service
            try:
                return await client.get(url, headers=headers)
            except httpx.ConnectError:
                await asyncio.sleep(0.05)


async def test_the_service_serves_the_api_with_its_token_and_stops_it_on_shutdown(zone, monkeypatch, restore_logging):
    other_token = "another-token-of-the-operator-42"
    stop, service, api_port = await run_service(zone, monkeypatch, KUBEMTA_API_TOKEN=other_token)
    url = f"http://127.0.0.1:{api_port}/v1/domains/{dz.GOOD}/check"
    try:
        refused = await first_answer(service, url, AUTH)  # the tests' usual token is not this service's
        assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Bearer ")
        response = await get(url, {"Authorization": f"Bearer {other_token}"})
        assert response.status_code == 200 and response.json()["ok"] is True, response.text
        assert (await get(url, {})).status_code == 401
    finally:
        stop.set()
        async with asyncio.timeout(IO_TIMEOUT):
            await service
    with pytest.raises(httpx.ConnectError):
        await get(url)


async def test_without_a_token_the_service_keeps_its_api_closed(zone, monkeypatch, restore_logging):
    stop, service, api_port = await run_service(zone, monkeypatch, KUBEMTA_API_TOKEN="")  # empty: no token
    url = f"http://127.0.0.1:{api_port}/v1/domains/{dz.GOOD}/check"
    before = checks_total("closed")
    try:
        for headers in ({}, AUTH, {"Authorization": "Bearer wrong-token-0123456789"}):
            response = await first_answer(service, url, headers)
            assert response.status_code == 503 and response.headers["content-type"] == "application/json"
            assert response.json() == {
                "detail": "the API is closed: no API token is configured (KUBEMTA_API_TOKEN, from a Secret)"
            }
        assert checks_total("closed") - before == 3
    finally:
        stop.set()
        async with asyncio.timeout(IO_TIMEOUT):
            await service
