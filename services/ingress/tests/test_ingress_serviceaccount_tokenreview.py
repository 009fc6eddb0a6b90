"""ServiceAccount tokens verified by the real `kubernetes` client against the fake TokenReview API over HTTPS."""

import asyncio
import logging
import time
from pathlib import Path
from typing import Annotated

import httpx
import pytest
from fastapi import Depends, FastAPI
from prometheus_client import REGISTRY

from kubemta_common.errors import ConfigError
from kubemta_ingress.api_auth import BearerAuth, Principal
from kubemta_ingress.serviceaccounts import Outcome, ServiceAccountVerifier, build_serviceaccount_verifier
from kubemta_ingress.settings import IngressSettings
from kubemta_ingress.tokenreview import api_environment
from kubemta_ingress.users import Identity
from tests.harness.fake_kube_api import FakeKubeApi, kube_api  # noqa: F401  (kube_api: a fixture)
from tests.harness.ports import free_port

IDENTITIES = "apps/mailer:mailer@example.com,example.org\nbatch/*:jobs@example.com\n"
TIMEOUT = 5.0
"""The request timeout of most tests: long enough for a loaded machine (the slow-API test sets a short one)."""
SHORT_TIMEOUT = 0.5


def settings_for(api: FakeKubeApi, tmp_path: Path, **overrides: object) -> IngressSettings:
    path = tmp_path / "sa-identities"
    path.write_text(IDENTITIES)
    values: dict[str, object] = {
        "serviceaccount_identities_file": path,
        "kubernetes_api_url": api.url,
        "kubernetes_token_file": api.caller_token_file,
        "kubernetes_ca_file": api.ca_file,
        "tokenreview_timeout": TIMEOUT,
        **overrides,
    }
    return IngressSettings(**values)  # type: ignore[arg-type]


@pytest.fixture
async def verifier(kube_api: FakeKubeApi, tmp_path: Path):  # noqa: F811
    built = build_serviceaccount_verifier(settings_for(kube_api, tmp_path))
    assert isinstance(built, ServiceAccountVerifier)
    yield built
    await built.close()


def metric(name: str, result: str) -> float:
    return REGISTRY.get_sample_value(name, {"result": result}) or 0.0


async def test_valid_token_gives_its_principal(kube_api: FakeKubeApi, verifier: ServiceAccountVerifier):  # noqa: F811
    token = kube_api.mint("apps", "mailer", audiences=["kubemta"])
    principal = await verifier.verify(token)
    assert principal is not None
    assert (principal.kind, principal.name) == ("serviceaccount", "system:serviceaccount:apps:mailer")
    assert principal.identities == (Identity.parse("mailer@example.com"), Identity.parse("example.org"))
    assert kube_api.last_request is not None and kube_api.last_request["spec"]["audiences"] == ["kubemta"]
    assert kube_api.last_request["kind"] == "TokenReview"
    wildcard = await verifier.verify(kube_api.mint("batch", "nightly.report", audiences=["other", "kubemta"]))
    assert wildcard is not None and wildcard.identities == (Identity.parse("jobs@example.com"),)


async def test_refused_tokens(kube_api: FakeKubeApi, verifier: ServiceAccountVerifier):  # noqa: F811
    refused = metric("kubemta_tokenreviews_total", "refused")
    forgotten = kube_api.mint("apps", "mailer", audiences=["kubemta"])  # JWT-shaped, but unknown to the API
    del kube_api.tokens[forgotten]
    assert await verifier.verify(forgotten) is None
    assert await verifier.verify(kube_api.mint("apps", "mailer", audiences=["kubemta"], lifetime=-5)) is None
    assert await verifier.verify(kube_api.mint("apps", "mailer", audiences=["vault"])) is None
    assert await verifier.verify(kube_api.mint("apps", "mailer", audiences=None)) is None  # the API's own audience
    assert kube_api.reviews == 4
    assert metric("kubemta_tokenreviews_total", "refused") == refused + 4


async def test_authenticated_without_our_audience_is_refused(
    kube_api: FakeKubeApi,  # noqa: F811
    verifier: ServiceAccountVerifier,
    caplog: pytest.LogCaptureFixture,
):
    kube_api.ignore_audiences = True  # an authenticator that ignores spec.audiences and answers none
    with caplog.at_level(logging.WARNING):
        assert await verifier.verify(kube_api.mint("apps", "mailer", audiences=["vault"])) is None
    assert kube_api.reviews == 1
    assert any("not bound to the audience 'kubemta'" in record.getMessage() for record in caplog.records)


async def test_unmapped_account_is_refused(kube_api: FakeKubeApi, verifier: ServiceAccountVerifier):  # noqa: F811
    token = kube_api.mint("default", "default", audiences=["kubemta"])
    assert (await verifier.check(token)).outcome is Outcome.UNMAPPED
    assert await verifier.verify(token) is None
    assert kube_api.reviews == 1


@pytest.mark.parametrize("status", [500, 503, 403, 429])
async def test_api_errors_refuse_for_now(kube_api: FakeKubeApi, verifier: ServiceAccountVerifier, status):  # noqa: F811
    token = kube_api.mint("apps", "mailer", audiences=["kubemta"])
    errors = metric("kubemta_tokenreviews_total", "error")
    kube_api.fail_with = status
    assert (await verifier.check(token)).outcome is Outcome.UNAVAILABLE
    assert metric("kubemta_tokenreviews_total", "error") == errors + 1
    kube_api.fail_with = None  # not remembered: the next check asks again
    assert await verifier.verify(token) is not None


async def test_api_down(kube_api: FakeKubeApi, verifier: ServiceAccountVerifier):  # noqa: F811
    token = kube_api.mint("apps", "mailer", audiences=["kubemta"])
    kube_api.stop()
    started = time.monotonic()
    assert (await verifier.check(token)).outcome is Outcome.UNAVAILABLE
    assert time.monotonic() - started < 3.0  # connections refused: no waiting for the timeout


async def test_api_slow_past_the_timeout(kube_api: FakeKubeApi, tmp_path: Path):  # noqa: F811
    built = build_serviceaccount_verifier(settings_for(kube_api, tmp_path, tokenreview_timeout=SHORT_TIMEOUT))
    assert built is not None
    try:
        token = kube_api.mint("apps", "mailer", audiences=["kubemta"])
        kube_api.slow = 10.0
        started = time.monotonic()
        assert (await built.check(token)).outcome is Outcome.UNAVAILABLE
        # the request timeout (one retry) and the overall deadline (1 s grace) end it long before the API answers
        assert time.monotonic() - started < SHORT_TIMEOUT + 3.0
    finally:
        await built.close()


async def test_our_own_token_refused_by_the_api(kube_api: FakeKubeApi, tmp_path: Path):  # noqa: F811
    kube_api.caller_tokens = {"someone-else"}
    built = build_serviceaccount_verifier(settings_for(kube_api, tmp_path))
    assert built is not None
    try:
        assert (
            await built.check(kube_api.mint("apps", "mailer", audiences=["kubemta"]))
        ).outcome is Outcome.UNAVAILABLE
        assert kube_api.requests == 1 and kube_api.reviews == 0
    finally:
        await built.close()


async def test_cache_and_expiry(kube_api: FakeKubeApi, verifier: ServiceAccountVerifier):  # noqa: F811
    long_lived = kube_api.mint("apps", "mailer", audiences=["kubemta"])
    for _ in range(3):
        assert await verifier.verify(long_lived) is not None
    assert kube_api.reviews == 1
    # The token says it expires in a second or two (the API would take it longer): the cache believes the shorter.
    expiry = int(time.time()) + 2  # `exp` is whole seconds: 1-2 s from now
    short = kube_api.mint("apps", "mailer", audiences=["kubemta"], claimed_expiry=expiry)
    assert await verifier.verify(short) is not None
    assert await verifier.verify(short) is not None
    assert kube_api.reviews == 2
    await asyncio.sleep(expiry - time.time() + 0.05)
    assert await verifier.verify(short) is not None
    assert kube_api.reviews == 3
    assert await verifier.verify(long_lived) is not None
    assert kube_api.reviews == 3


async def test_single_flight(kube_api: FakeKubeApi, verifier: ServiceAccountVerifier):  # noqa: F811
    token = kube_api.mint("apps", "mailer", audiences=["kubemta"])
    kube_api.slow = 0.2
    results = await asyncio.wait_for(asyncio.gather(*(verifier.verify(token) for _ in range(10))), 5)
    assert all(result is not None for result in results)
    assert kube_api.requests == 1


async def test_in_cluster_address(kube_api: FakeKubeApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # noqa: F811
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", kube_api.host)
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(kube_api.port))
    built = build_serviceaccount_verifier(settings_for(kube_api, tmp_path, kubernetes_api_url=None))
    assert built is not None
    try:
        assert await built.verify(kube_api.mint("apps", "mailer", audiences=["kubemta"])) is not None
    finally:
        await built.close()


async def test_untrusted_certificate_is_no_answer(kube_api: FakeKubeApi, tmp_path: Path):  # noqa: F811
    other_ca = FakeKubeApi.start(tmp_path / "other")
    other_ca.stop()
    built = build_serviceaccount_verifier(settings_for(kube_api, tmp_path, kubernetes_ca_file=other_ca.ca_file))
    assert built is not None
    try:
        token = kube_api.mint("apps", "mailer", audiences=["kubemta"])
        assert (await built.check(token)).outcome is Outcome.UNAVAILABLE
        assert kube_api.reviews == 0
    finally:
        await built.close()


def test_not_configured(tmp_path: Path):
    assert build_serviceaccount_verifier(IngressSettings()) is None


def test_configuration_errors(kube_api: FakeKubeApi, tmp_path: Path):  # noqa: F811
    with pytest.raises(ConfigError, match="Service token file does not exist"):
        build_serviceaccount_verifier(settings_for(kube_api, tmp_path, kubernetes_token_file=tmp_path / "absent"))
    with pytest.raises(ConfigError, match="certification file does not exist"):
        build_serviceaccount_verifier(settings_for(kube_api, tmp_path, kubernetes_ca_file=tmp_path / "absent"))
    with pytest.raises(ConfigError, match="KUBEMTA_SERVICEACCOUNT_IDENTITIES_FILE"):
        build_serviceaccount_verifier(
            settings_for(kube_api, tmp_path, serviceaccount_identities_file=tmp_path / "absent")
        )


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:6443",
        "https://127.0.0.1:6443/prefix",
        "https://127.0.0.1:6443?x=1",
        "https://:6443",
        "https://127.0.0.1:99999",
        "kubernetes.default.svc",
        "https://127.0.0.1:6443\r\nX: y",
    ],
)
def test_bad_api_urls(url):
    with pytest.raises(ConfigError, match="KUBEMTA_KUBERNETES_API_URL"):
        api_environment(url, {})


def test_api_urls():
    assert api_environment("https://10.0.0.1", {}) == {
        "KUBERNETES_SERVICE_HOST": "10.0.0.1",
        "KUBERNETES_SERVICE_PORT": "443",
    }
    assert api_environment("https://[fd00::1]:6443/", {}) == {
        "KUBERNETES_SERVICE_HOST": "fd00::1",
        "KUBERNETES_SERVICE_PORT": "6443",
    }
    environ = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    assert api_environment(None, environ) is environ


async def test_api_refusing_connections_from_the_start(tmp_path: Path, kube_api: FakeKubeApi):  # noqa: F811
    built = build_serviceaccount_verifier(
        settings_for(kube_api, tmp_path, kubernetes_api_url=f"https://127.0.0.1:{free_port()}")
    )
    assert built is not None
    try:
        token = kube_api.mint("apps", "mailer", audiences=["kubemta"])
        assert (await built.check(token)).outcome is Outcome.UNAVAILABLE
    finally:
        await built.close()


async def test_as_the_http_api_bearer_token(kube_api: FakeKubeApi, verifier: ServiceAccountVerifier):  # noqa: F811
    """The verifier behind the API's BearerAuth dependency, as the lead wires it (api_auth.py)."""
    app = FastAPI()
    auth = BearerAuth([verifier])

    @app.get("/whoami")
    async def whoami(principal: Annotated[Principal, Depends(auth)]) -> dict[str, object]:
        return {"kind": principal.kind, "name": principal.name, "identities": [str(i) for i in principal.identities]}

    token = kube_api.mint("apps", "mailer", audiences=["kubemta"])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api.test") as client:
        answer = await client.get("/whoami", headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 200
        assert answer.json() == {
            "kind": "serviceaccount",
            "name": "system:serviceaccount:apps:mailer",
            "identities": ["mailer@example.com", "example.org"],
        }
        for bad in (kube_api.mint("apps", "mailer", audiences=["vault"]), "garbage", "a" * 9000):
            answer = await client.get("/whoami", headers={"Authorization": f"Bearer {bad}"})
            assert answer.status_code == 401 and "invalid_token" in answer.headers["WWW-Authenticate"]
        kube_api.fail_with = 500
        other = kube_api.mint("apps", "mailer", audiences=["kubemta"])
        answer = await client.get("/whoami", headers={"Authorization": f"Bearer {other}"})
        assert answer.status_code == 401
    assert kube_api.reviews == 2


def test_an_ingress_without_serviceaccount_identities_never_imports_the_kubernetes_client() -> None:
    """The client is imported when identities are configured (the tests above build a verifier that way); the
    default ingress starts without it, about 0.1 s of CPU less at every start."""
    import subprocess
    import sys

    program = (
        "import sys, kubemta_ingress.__main__, kubemta_ingress.serviceaccounts; "
        "print(sorted(name for name in sys.modules if name.split('.')[0] == 'kubernetes'))"
    )
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "[]"
