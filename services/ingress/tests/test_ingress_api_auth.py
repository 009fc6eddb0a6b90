"""The HTTP API's bearer token against hostile input, over real HTTP: any Authorization value (hypothesis over raw
bytes on a socket, and chosen nasty ones) gets a JSON 401 (or uvicorn's 400/431 for a malformed request), never a
500 or a traceback; the token setting's validation (KUBEMTA_API_TOKEN) never echoes the secret; the parser and the
constant-time verifier."""

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from kubemta_common.errors import ConfigError
from kubemta_ingress.api_auth import BearerAuth, Principal, StaticTokenVerifier, bearer_token, well_formed
from kubemta_ingress.check_service import CheckLimits
from kubemta_ingress.settings import IngressSettings
from tests.harness.api_kit import IO_TIMEOUT, TOKEN, Api, GatedResolver, serve_api

LIMITS = CheckLimits(per_minute=6000, burst=1000, concurrency=10, timeout=60.0, cache_ttl=60.0, cache_size=100)
DOMAIN = "hostile.api.test"


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    async with serve_api(GatedResolver(open_gate=True), LIMITS) as served:
        yield served


def no_errors_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


async def raw_request(url: str, request: bytes) -> tuple[int, bytes]:
    """Send `request` as bytes; the status code and the rest of the first response."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    async with asyncio.timeout(IO_TIMEOUT):
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(request)
        response = await reader.read()
        writer.close()
        await writer.wait_closed()
    status_line, _, rest = response.partition(b"\r\n")
    return int(status_line.split()[1]), rest


def check_request(authorization: bytes) -> bytes:
    head = b"GET /v1/domains/" + DOMAIN.encode() + b"/check HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
    return head + b"Authorization: " + authorization + b"\r\n\r\n"


def assert_refused_cleanly(status: int, rest: bytes, caplog: pytest.LogCaptureFixture) -> None:
    """401 from the API (JSON, with the challenge), or 400/431 from uvicorn for a malformed request; never 500."""
    assert status in (400, 401, 431), (status, rest[:300])
    headers, _, body = rest.partition(b"\r\n\r\n")
    if status == 401:
        assert b'www-authenticate: bearer realm="kubemta"' in headers.lower()
        assert body.startswith(b'{"detail":"')
    assert b"Traceback" not in rest and TOKEN.encode() not in body
    assert no_errors_logged(caplog) == []


hostile = st.binary(max_size=300)
latin1 = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=300).map(
    lambda text: text.encode("latin-1")
)


def _spoils_the_token(rest: bytes) -> bool:
    """True when `rest`, right after a valid token, changes the header's value: something other than white space
    before the end of the line (HTTP trims OWS around a value, and h11 also ends a line at a bare LF or CR)."""
    first_line = rest.split(b"\n", 1)[0].split(b"\r", 1)[0]
    return first_line.strip(b" \t") != b""


not_blank = st.one_of(hostile, latin1).filter(_spoils_the_token)


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)
@given(
    value=st.one_of(
        hostile,
        latin1,
        st.builds(lambda scheme, rest: scheme + b" " + rest, st.sampled_from([b"Bearer", b"bearer", b"Basic", b""]),
                  st.one_of(hostile, latin1)),
        st.builds(lambda rest: b"Bearer " + TOKEN.encode() + rest, not_blank),
        st.builds(lambda n: b"Bearer " + b"A" * n, st.integers(0, 20000)),
    )
)  # fmt: skip
async def test_any_authorization_bytes_are_a_clean_refusal_never_a_500(api, caplog, value):
    caplog.set_level(logging.WARNING)
    caplog.clear()
    status, rest = await raw_request(api.url, check_request(value))
    assert_refused_cleanly(status, rest, caplog)


@pytest.mark.parametrize(
    "header",
    [
        b"Bearer \xff\xfe\x00" + TOKEN.encode(),
        b"Bearer " + TOKEN.encode() + b"\x00",
        b"\xc3\xa9\xe2\x82\xac Bearer " + TOKEN.encode(),
        b"Bearer\t" + TOKEN.encode(),
        b"Bearer " + b"=" * 100,
        b"Bearer " + b"A" * 70000,
        b"Bearer wrong-token-0123456789\r\nAuthorization: Bearer " + TOKEN.encode(),  # the first one counts
        b"",
        b"Bearer " + TOKEN.encode() + b"\r\n continued",  # obsolete line folding (RFC 9112 section 5.2)
        b"Bearer " + TOKEN.encode()[:-1] + b"\r\nAuthorization : x",
    ],
    ids=repr,
)
async def test_raw_authorization_headers_never_give_a_500(api, caplog, header):
    caplog.set_level(logging.WARNING)
    status, rest = await raw_request(api.url, check_request(header))
    assert_refused_cleanly(status, rest, caplog)


@pytest.mark.parametrize(
    ("authorization", "token"),
    [
        (None, None),
        ("", None),
        (f"Bearer {TOKEN}", TOKEN),
        (f"bEaReR   {TOKEN}", TOKEN),
        (f"  Bearer {TOKEN}  ", TOKEN),
        ("Bearer abc==", "abc=="),
        ("Bearer", None),
        ("Bearer   ", None),
        ("Bearer\tabc", None),
        (f"Basic {TOKEN}", None),
        (TOKEN, None),
        ("Bearer =abc", "=abc"),
        ("Bearer a b", "a b"),
        ("Bearer é", "é"),
    ],
)
def test_the_bearer_token_parser(authorization, token):
    assert bearer_token(authorization) == token


@pytest.mark.parametrize(
    ("token", "ok"),
    [(TOKEN, True), ("abc==", True), ("a+/_~.-9", True), ("=abc", False), ("a b", False), ("é", False),
     ("a=b", False), ("a" * 8192, True), ("a" * 8193, False)],
)  # fmt: skip
def test_only_well_formed_tokens_reach_a_verifier(token, ok):
    assert well_formed(token) is ok


async def test_the_static_verifier_knows_exactly_its_token():
    verifier = StaticTokenVerifier(SecretStr(TOKEN))
    assert await verifier.verify(TOKEN) == Principal(kind="api-token", name="operator")
    for other in ("", TOKEN[:-1], TOKEN + "=", TOKEN.upper(), "\udcff" + TOKEN):
        assert await verifier.verify(other) is None


async def test_more_verifiers_are_asked_in_turn():
    """The seam for API keys and ServiceAccount tokens: the first verifier that knows the token wins."""

    class Keys:
        async def verify(self, token: str) -> Principal | None:
            return Principal(kind="api-key", name="app-1") if token == "key-of-app-1" else None

    auth = BearerAuth([StaticTokenVerifier(SecretStr(TOKEN)), Keys()])
    assert await auth(f"Bearer {TOKEN}") == Principal(kind="api-token", name="operator")
    assert await auth("Bearer key-of-app-1") == Principal(kind="api-key", name="app-1")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("short-token", "at least 16 characters"),
        ("a token with spaces in it", "RFC 6750"),
        ("tökenwithumlautsinside", "RFC 6750"),
        ("=abcdefghijklmnopqrstuvwxyz", "RFC 6750"),
    ],
)
def test_a_bad_token_setting_is_a_config_error_that_does_not_echo_it(monkeypatch, value, message):
    monkeypatch.setenv("KUBEMTA_API_TOKEN", value)
    with pytest.raises(ConfigError) as error:
        IngressSettings.load()
    assert "KUBEMTA_API_TOKEN" in str(error.value) and message in str(error.value)
    assert value not in str(error.value)


def test_the_token_setting_is_a_secret_and_blank_means_none(monkeypatch):
    monkeypatch.setenv("KUBEMTA_API_TOKEN", f"  {TOKEN}\n")
    settings = IngressSettings.load()
    assert settings.api_token is not None and settings.api_token.get_secret_value() == TOKEN
    assert TOKEN not in repr(settings) and TOKEN not in str(settings.model_dump())
    monkeypatch.setenv("KUBEMTA_API_TOKEN", " ")
    assert IngressSettings.load().api_token is None


def test_the_token_is_read_from_the_secrets_directory(tmp_path, monkeypatch):
    """A Secret mounted as the secrets directory: pydantic-settings names the file like the variable (the prefix
    included, case-insensitive); the trailing newline of a file made with an editor is not part of the token."""
    monkeypatch.delenv("KUBEMTA_API_TOKEN", raising=False)
    (tmp_path / "kubemta_api_token").write_text(TOKEN + "\n")
    settings = IngressSettings(_secrets_dir=tmp_path)  # type: ignore[call-arg]
    assert settings.api_token is not None and settings.api_token.get_secret_value() == TOKEN


def test_the_api_limit_settings(monkeypatch):
    for name, value in {
        "KUBEMTA_API_CHECKS_PER_MINUTE": "120",
        "KUBEMTA_API_CHECK_BURST": "3",
        "KUBEMTA_API_MAX_CONCURRENT_CHECKS": "2",
        "KUBEMTA_API_CHECK_TIMEOUT": "1m",
        "KUBEMTA_API_CACHE_TTL": "5m",
        "KUBEMTA_API_CACHE_SIZE": "0",
    }.items():
        monkeypatch.setenv(name, value)
    assert CheckLimits.from_settings(IngressSettings.load()) == CheckLimits(120.0, 3, 2, 60.0, 300.0, 0)
    for name in ("KUBEMTA_API_CHECKS_PER_MINUTE", "KUBEMTA_API_MAX_CONCURRENT_CHECKS", "KUBEMTA_API_CHECK_TIMEOUT"):
        monkeypatch.setenv(name, "0")
    with pytest.raises(ConfigError) as error:
        IngressSettings.load()
    for name in ("KUBEMTA_API_CHECKS_PER_MINUTE", "KUBEMTA_API_MAX_CONCURRENT_CHECKS", "KUBEMTA_API_CHECK_TIMEOUT"):
        assert name in str(error.value)
