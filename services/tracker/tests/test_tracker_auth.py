"""API authentication: bearer tokens from the read and admin tables, 401/403, hostile Authorization headers."""

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi import Depends, FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr
from starlette.requests import Request

from kubemta_common.errors import ConfigError
from kubemta_tracker.auth import Scope, TokenAuth, authenticate, bearer_token, require_admin, require_read
from kubemta_tracker.settings import parse_tokens
from tests.harness.fake_events import RecordingEvents

READ = "read-token-0123456789abcdef"
ADMIN = "admin-token-0123456789abcdef"


def _auth() -> TokenAuth:
    return TokenAuth({"reader": SecretStr(READ)}, {"operator": SecretStr(ADMIN)})


def _app() -> FastAPI:
    app = FastAPI()
    app.state.auth = _auth()

    @app.get("/read")
    async def read(caller: str = Depends(require_read)) -> dict[str, str]:
        return {"caller": caller}

    @app.post("/admin")
    async def admin(caller: str = Depends(require_admin)) -> dict[str, str]:
        return {"caller": caller}

    return app


@pytest.fixture
async def client() -> Any:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=_app()), base_url="http://t") as client:
        yield client


async def test_scopes_and_actor_names(client: httpx.AsyncClient) -> None:
    assert (await client.get("/read", headers={"Authorization": f"Bearer {READ}"})).json() == {"caller": "reader"}
    assert (await client.get("/read", headers={"Authorization": f"bearer {ADMIN}"})).json() == {"caller": "operator"}
    assert (await client.post("/admin", headers={"Authorization": f"Bearer {ADMIN}"})).json() == {"caller": "operator"}
    refused = await client.post("/admin", headers={"Authorization": f"Bearer {READ}"})
    assert refused.status_code == 403
    assert refused.json() == {"detail": "this token may only read"}


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        f"Basic {READ}",
        f"Bearer {READ}x",
        f"Bearer {READ[:-1]}",
        f"Bearer {READ} {READ}",
        f"Bearer {READ},{ADMIN}",
        "Bearer " + "A" * 100_000,
        f"Bearer {READ}\u00e9",
    ],
)
async def test_missing_or_wrong_tokens_get_401_with_a_bearer_challenge(
    client: httpx.AsyncClient, header: str | None
) -> None:
    headers: dict[bytes, bytes] = {} if header is None else {b"Authorization": header.encode("utf-8")}
    for method, path in (("GET", "/read"), ("POST", "/admin")):
        response = await client.request(method, path, headers=headers)
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith('Bearer realm="kubemta-tracker"')
        assert READ not in response.text and ADMIN not in response.text


def _request(raw: bytes) -> Request:
    return Request({"type": "http", "headers": [(b"authorization", raw)], "app": _app()})


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300) | st.text(max_size=200).map(lambda text: f"Bearer {text}".encode("utf-8", "replace")))
def test_hostile_authorization_values_never_authenticate_or_crash(raw: bytes) -> None:
    from fastapi import HTTPException

    if raw.strip() in (f"Bearer {READ}".encode(), f"Bearer {ADMIN}".encode()):
        return
    with pytest.raises(HTTPException) as refused:
        authenticate(_request(raw), Scope.READ)
    assert refused.value.status_code == 401


@given(st.text(max_size=100))
def test_bearer_token_only_takes_b64tokens(value: str) -> None:
    token = bearer_token(f"Bearer {value}")
    assert token is None or token == value.strip(" \t")


def test_no_tokens_configured_means_closed() -> None:
    auth = TokenAuth({}, {})
    assert not auth.configured
    assert auth.identify(READ) is None


def test_a_token_in_both_tables_is_admin() -> None:
    auth = TokenAuth({"both": SecretStr(READ)}, {"both-admin": SecretStr(READ)})
    assert auth.identify(READ) == ("both-admin", Scope.ADMIN)


def test_token_tables_are_validated_without_echoing_tokens() -> None:
    assert {name: token.get_secret_value() for name, token in parse_tokens(f"a:{READ}\nb.c-d_e:{ADMIN},").items()} == {
        "a": READ,
        "b.c-d_e": ADMIN,
    }
    for bad in (f"{READ}", "a:short", f"A:{READ}", f"a:{READ},a:{ADMIN}", f"a b:{READ}", f"a:{READ} x", ":" + READ):
        with pytest.raises(ValueError) as problem:
            parse_tokens(bad)
        assert READ not in str(problem.value)


def test_settings_load_names_the_bad_token_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    from kubemta_tracker.settings import TrackerSettings

    monkeypatch.setenv("KUBEMTA_TRACKER_ADMIN_TOKENS", "operator:tooshort")
    with pytest.raises(ConfigError) as problem:
        TrackerSettings.load()
    assert "KUBEMTA_TRACKER_ADMIN_TOKENS" in str(problem.value)
    assert "tooshort" not in str(problem.value)
    monkeypatch.setenv("KUBEMTA_TRACKER_ADMIN_TOKENS", f"operator:{ADMIN}")
    monkeypatch.setenv("KUBEMTA_TRACKER_READ_TOKENS", f"cli:{READ}")
    loaded = TrackerSettings.load()
    assert loaded.tracker_admin_tokens["operator"].get_secret_value() == ADMIN
    assert ADMIN not in repr(loaded)


async def test_every_tracker_route_needs_a_token(make_client: Callable[..., httpx.AsyncClient]) -> None:
    client = make_client(events=RecordingEvents())
    for path in (
        "/v1/messages",
        "/v1/messages/Q1",
        "/v1/queue/summary",
        "/v1/queue/held",
        "/v1/duplicates/received/" + "ab" * 32,
        "/v1/duplicates/jobs/Q1.example.org/delivered",
        "/v1/duplicates/recorded?kind=queued&queue_id=Q1",
    ):
        response = await client.get(path)
        assert response.status_code == 401, path
        assert (await client.get(path, headers={"Authorization": "Bearer wrong-token-0123456789"})).status_code == 401
