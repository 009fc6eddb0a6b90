"""API keys (api_keys.py): the key format, the keys file (parsing, hot reload, last good version kept), the
verifier against hostile tokens (chosen ones and hypothesis), its metric, and a key accepted over real HTTP."""

import asyncio
import hashlib
import logging
import os
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from kubemta_common.config_types import ListenAddress
from kubemta_common.errors import ConfigError
from kubemta_common.http_server import HttpServer
from kubemta_ingress.api import create_app
from kubemta_ingress.api_auth import BearerAuth, Principal, well_formed
from kubemta_ingress.api_keys import (
    KEY_LENGTH,
    ApiKey,
    ApiKeysFile,
    ApiKeysFileError,
    ApiKeyVerifier,
    build_api_key_verifier,
    new_key,
    parse_api_keys,
    render,
    split_key,
)
from kubemta_ingress.check_service import CheckLimits, CheckService
from kubemta_ingress.settings import IngressSettings
from kubemta_ingress.users import Identity
from tests.harness.api_kit import CONFIG, IO_TIMEOUT, GatedResolver, SteppingClock
from tests.harness.ports import free_port

APP = (Identity.parse("app@example.com"), Identity.parse("example.org"))


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def checks(result: str) -> float:
    value = REGISTRY.get_sample_value("kubemta_api_key_checks_total", {"result": result})
    assert value is not None  # preinitialised
    return value


def write_keys(path: Path, *keys: ApiKey, header: tuple[str, ...] = ("# API keys",)) -> None:
    path.write_text(render(keys, header), encoding="utf-8")


def verifier_for(path: Path, clock: Clock | None = None) -> ApiKeyVerifier:
    return ApiKeyVerifier(ApiKeysFile(path, clock=clock or Clock()))


# -- the key and the file ------------------------------------------------------------------------------------


def test_a_new_key_has_the_documented_shape_and_only_its_hash_is_stored():
    made = new_key("app", APP)
    prefix, keyid, secret = made.token[:5], made.token[5:17], made.token[18:]
    assert prefix == "kmta_" and made.token[17] == "_" and len(made.token) == KEY_LENGTH == 61
    assert keyid == made.entry.keyid and len(keyid) == 12 and set(keyid) <= set("0123456789abcdef")
    assert len(secret) == 43 and well_formed(made.token)  # an RFC 6750 b64token
    assert made.entry.digest == hashlib.sha256(secret.encode()).digest()
    assert split_key(made.token) == (keyid, secret)
    line = made.entry.line()
    assert line == f"app:{keyid}:sha256:{made.entry.digest.hex()}:app@example.com,example.org"
    assert secret not in line and made.token not in repr(made) and made.entry.digest.hex() not in repr(made.entry)
    assert new_key("app", APP).token != made.token


def test_new_key_avoids_taken_keyids(monkeypatch):
    ids = iter(["aaaaaaaaaaaa", "aaaaaaaaaaaa", "bbbbbbbbbbbb"])
    monkeypatch.setattr("kubemta_ingress.api_keys.secrets.token_hex", lambda _n: next(ids))
    assert new_key("app", APP, taken=["aaaaaaaaaaaa"]).entry.keyid == "bbbbbbbbbbbb"


def test_the_file_format_comments_blank_lines_and_identities():
    first, second = new_key("app", APP).entry, new_key("b.app@x", APP[:1]).entry
    name, keyid, scheme, digest, _ = second.line().split(":")
    spaced = f" {name} : {keyid} : {scheme} : {digest.upper()} :  App@Example.COM , @bücher.example ,"
    keys = parse_api_keys(f"# keys\n\n  {first.line()}  \n  # more\n{spaced}\n")
    assert list(keys.by_name) == ["app", "b.app@x"] and list(keys.by_keyid) == [first.keyid, second.keyid]
    assert keys.by_name["app"] == first
    assert keys.by_name["b.app@x"].digest == second.digest
    assert [str(identity) for identity in keys.by_name["b.app@x"].identities] == [
        "app@example.com",
        "xn--bcher-kva.example",
    ]


def test_names_may_carry_only_the_old_suffix_and_the_old_key_is_the_same_principal():
    entry = new_key("app", APP).entry
    keys = parse_api_keys(entry.line().replace("app:", "app~old:", 1))
    assert keys.by_name["app~old"].principal_name == "apikey:app"
    with pytest.raises(ApiKeysFileError):
        parse_api_keys(entry.line().replace("app:", "app~new:", 1))


@pytest.mark.parametrize(
    "line",
    [
        "app:0123456789ab:sha256:{hex}",  # no identities field
        "app:0123456789ab:sha256:{hex}:",  # no identity
        "app:0123456789ab:sha256:{hex}:example.com:extra",
        "app:0123456789AB:sha256:{hex}:example.com",  # keyid not lower case
        "app:0123456789a:sha256:{hex}:example.com",  # keyid too short
        "app:0123456789abc:sha256:{hex}:example.com",
        "app:0123456789ab:sha512:{hex}:example.com",
        "app:0123456789ab:SHA256:{hex}:example.com",
        "app:0123456789ab:sha256:{hex}0:example.com",
        "app:0123456789ab:sha256:{short}:example.com",
        "app:0123456789ab::{hex}:example.com",
        "app:0123456789ab:sha256:kmta_0123456789ab_secretsecretsecretsecretsecretsecretsecre:example.com",
        "ap p:0123456789ab:sha256:{hex}:example.com",
        ":0123456789ab:sha256:{hex}:example.com",
        "app:0123456789ab:sha256:{hex}:exa_mple.com",
        "app:0123456789ab:sha256:{hex}:not an@address",
    ],
)
def test_malformed_lines_are_refused_naming_the_line_and_never_the_hash(line):
    digest = "ab" * 32
    text = f"# keys\n{new_key('ok', APP).entry.line()}\n" + line.format(hex=digest, short=digest[:40]) + "\n"
    with pytest.raises(ApiKeysFileError) as caught:
        parse_api_keys(text)
    assert "line 3" in str(caught.value)
    assert digest[:40] not in str(caught.value) and "secretsecret" not in str(caught.value)


def test_duplicate_names_and_keyids_are_refused():
    first, second = new_key("app", APP).entry, new_key("other", APP).entry
    with pytest.raises(ApiKeysFileError, match="line 2: duplicate key name app"):
        parse_api_keys(f"{first.line()}\n{ApiKey('app', second.keyid, second.digest, APP).line()}\n")
    with pytest.raises(ApiKeysFileError, match="line 2 .*keyid already used by app") as caught:
        parse_api_keys(f"{first.line()}\n{ApiKey('other', first.keyid, second.digest, APP).line()}\n")
    assert first.digest.hex() not in str(caught.value) and second.digest.hex() not in str(caught.value)


_LINE_PARTS = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["app", "0123456789ab", "sha256", "ab" * 32, "example.com", "@example.org", "a@b.c", "~old", ""]),
)


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.text(max_size=300),
        st.lists(st.lists(_LINE_PARTS, max_size=7).map(":".join), max_size=5).map("\n".join),
    )
)
def test_the_parser_raises_nothing_but_its_own_error(text):
    try:
        keys = parse_api_keys(text)
    except ApiKeysFileError:
        return
    for key in keys.by_name.values():
        assert key.identities and len(key.digest) == 32 and keys.by_keyid[key.keyid] is key


def test_undecodable_file_is_a_file_error(tmp_path):
    path = tmp_path / "keys"
    path.write_bytes(b"app:\xff\xfe:sha256\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        ApiKeysFile(path)


# -- ApiKeysFile: start, reload, last good version -----------------------------------------------------------


def test_missing_or_broken_file_at_start_is_a_config_error_without_the_hash(tmp_path):
    with pytest.raises(ConfigError, match="KUBEMTA_API_KEYS_FILE"):
        ApiKeysFile(tmp_path / "absent")
    path = tmp_path / "keys"
    digest = "cd" * 32
    path.write_text(f"app:0123456789ab:md5:{digest}:example.com\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        ApiKeysFile(path)
    assert "line 1" in str(caught.value) and digest not in str(caught.value)


async def test_hot_reload_within_the_check_interval(tmp_path):
    path = tmp_path / "keys"
    first, second = new_key("app", APP), new_key("other", APP[1:])
    write_keys(path, first.entry)
    clock = Clock()
    verifier = verifier_for(path, clock)
    assert await verifier.verify(first.token) == Principal("api-key", "apikey:app", APP)
    assert await verifier.verify(second.token) is None
    write_keys(path, second.entry)
    os.utime(path, ns=(1, 1))  # a different modification time, whatever the file system's granularity
    assert await verifier.verify(first.token) is not None  # not looked at yet
    clock.now += 2.5
    assert await verifier.verify(first.token) is None
    assert await verifier.verify(second.token) == Principal("api-key", "apikey:other", APP[1:])


async def test_a_broken_file_keeps_the_previous_keys_and_logs_once(tmp_path, caplog):
    path = tmp_path / "keys"
    made = new_key("app", APP)
    write_keys(path, made.entry)
    clock = Clock()
    verifier = verifier_for(path, clock)
    broken_digest = "ef" * 32
    path.write_text(f"{made.entry.line()}\nbroken:0123456789ab:sha256:{broken_digest}:exa_mple.com\n", encoding="utf-8")
    os.utime(path, ns=(2, 2))
    with caplog.at_level(logging.ERROR, logger="kubemta_ingress.api_keys"):
        for _ in range(2):
            clock.now += 10
            assert await verifier.verify(made.token) is not None
    errors = [record for record in caplog.records if record.levelno == logging.ERROR]
    assert len(errors) == 1 and "line 2" in errors[0].getMessage()
    assert broken_digest not in caplog.text and made.entry.digest.hex() not in caplog.text
    path.unlink()  # a vanished file keeps the last good version too
    clock.now += 10
    assert await verifier.verify(made.token) is not None
    replacement = new_key("app", APP)
    write_keys(path, replacement.entry)
    clock.now += 10
    assert await verifier.verify(made.token) is None
    assert await verifier.verify(replacement.token) is not None


def test_build_api_key_verifier(tmp_path):
    assert build_api_key_verifier(IngressSettings()) is None
    path = tmp_path / "keys"
    write_keys(path, new_key("app", APP).entry)
    assert isinstance(build_api_key_verifier(IngressSettings(api_keys_file=path)), ApiKeyVerifier)
    with pytest.raises(ConfigError, match="KUBEMTA_API_KEYS_FILE"):
        build_api_key_verifier(IngressSettings(api_keys_file=tmp_path / "none"))


# -- the verifier against hostile tokens ---------------------------------------------------------------------


@pytest.fixture
def two_keys(tmp_path: Path) -> tuple[ApiKeyVerifier, str, str]:
    app, other = new_key("app", APP), new_key("other", APP)
    path = tmp_path / "keys"
    write_keys(path, app.entry, other.entry)
    return verifier_for(path), app.token, other.token


def hostile_variants(token: str, other: str) -> dict[str, tuple[str, str | None]]:
    """Name -> (token, the result it must count: malformed, unknown, or None for not counted)."""
    keyid, secret = token[5:17], token[18:]
    return {
        "uppercase prefix": ("KMTA_" + token[5:], None),
        "dash prefix": ("kmta-" + token[5:], None),
        "no prefix": (token[5:], None),
        "one char short": (token[:-1], "malformed"),
        "one char long": (token + "A", "malformed"),
        "padded": (token[:-1] + "=", "malformed"),
        "plus in secret": (token[:-1] + "+", "malformed"),
        "slash in secret": (token[:-1] + "/", "malformed"),
        "non-ascii in secret": (token[:-1] + "é", "malformed"),
        "nul in secret": (token[:-1] + "\0", "malformed"),
        "uppercase keyid": (f"kmta_{keyid.upper()}_{secret}" if keyid.upper() != keyid else token[:-1], "malformed"),
        "dash separator": (f"kmta_{keyid}-{secret}", "malformed"),
        "prefix only": ("kmta_", "malformed"),
        "huge": ("kmta_" + "A" * 10_000_000, "malformed"),
        "keyid of another key, its secret wrong": (f"kmta_{keyid}_{other[18:]}", "unknown"),
        "unknown keyid": (f"kmta_{'f' * 12 if keyid != 'f' * 12 else 'e' * 12}_{secret}", "unknown"),
        "secret changed in one char": (token[:-2] + ("B" if token[-2] != "B" else "C") + token[-1], "unknown"),
    }


@pytest.mark.parametrize(
    "variant",
    list(hostile_variants("kmta_0123456789ab_" + "A" * 43, "kmta_ba9876543210_" + "B" * 43)),
)
async def test_hostile_tokens_never_verify_and_are_counted(two_keys, variant):
    verifier, token, other = two_keys
    hostile, counted = hostile_variants(token, other)[variant]
    before = {result: checks(result) for result in ("ok", "unknown", "malformed")}
    assert await verifier.verify(hostile) is None
    after = {result: checks(result) for result in ("ok", "unknown", "malformed")}
    expected = {result: before[result] + (1 if result == counted else 0) for result in before}
    assert after == expected


async def test_each_key_verifies_as_its_own_principal_and_is_counted(two_keys):
    verifier, token, other = two_keys
    ok = checks("ok")
    assert await verifier.verify(token) == Principal("api-key", "apikey:app", APP)
    assert await verifier.verify(other) == Principal("api-key", "apikey:other", APP)
    assert checks("ok") == ok + 2


async def test_a_wrong_secret_for_a_known_keyid_is_logged_by_keyid_without_secrets(two_keys, caplog):
    verifier, token, other = two_keys
    with caplog.at_level(logging.INFO, logger="kubemta_ingress.api_keys"):
        assert await verifier.verify(token[:18] + other[18:]) is None
    assert f"keyid {token[5:17]}" in caplog.text and other[18:] not in caplog.text and token[18:] not in caplog.text


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.one_of(
        st.text(max_size=200),
        st.text(max_size=80).map(lambda tail: "kmta_" + tail),
        st.text(alphabet="0123456789abcdefABCDEF_-+/=", min_size=56, max_size=56).map(lambda tail: "kmta_" + tail),
    )
)
async def test_random_strings_never_raise_and_never_verify(two_keys, text):
    verifier, token, other = two_keys
    if text in (token, other):
        return
    assert await verifier.verify(text) is None


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", min_size=43, max_size=43))
async def test_a_known_keyid_with_any_other_secret_never_verifies(two_keys, secret):
    verifier, token, _ = two_keys
    if secret == token[18:]:
        return
    assert await verifier.verify(f"{token[:18]}{secret}") is None


# -- over real HTTP: BearerAuth with the operator token and the API keys --------------------------------------


async def test_a_key_authenticates_over_http_and_a_removed_one_does_not(tmp_path):
    path = tmp_path / "keys"
    made = new_key("app", APP)
    write_keys(path, made.entry)
    clock = Clock()
    verifier = verifier_for(path, clock)
    limits = CheckLimits(per_minute=6000, burst=1000, concurrency=10, timeout=60.0, cache_ttl=60.0, cache_size=100)
    resolver = GatedResolver(open_gate=True)
    service = CheckService(CONFIG, resolver, limits, SteppingClock())
    listen = ListenAddress("127.0.0.1", free_port())
    server = HttpServer(create_app(service, BearerAuth([verifier])), listen)
    async with asyncio.timeout(IO_TIMEOUT):
        await server.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://{listen}", timeout=IO_TIMEOUT) as client:

            async def status(token: str) -> int:
                response = await client.get(
                    "/v1/domains/keys.api.test/check", headers={"Authorization": f"Bearer {token}"}
                )
                return response.status_code

            assert await status(made.token) == 403  # authenticated (not 401); the domain check is the operator's
            assert await status(made.token[:-1] + ("A" if made.token[-1] != "A" else "B")) == 401
            assert await status("kmta_" + "x" * 9000) == 401
            write_keys(path)
            os.utime(path, ns=(3, 3))
            clock.now += 10
            assert await status(made.token) == 401
    finally:
        async with asyncio.timeout(IO_TIMEOUT):
            await server.stop()
