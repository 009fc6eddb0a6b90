"""POST /v1/messages: apps send over HTTP through the same checks as SMTP (acceptance.py), answered in HTTP.

The route runs in the real FastAPI app (create_app, with its body limit) over httpx's ASGI transport; the
broker is the FakePublisher (the real broker, ServiceAccount tokens and DKIM are in tests/e2e/test_app_journey.py).
"""

import asyncio
import base64
import email
import email.policy
import json
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY
from pydantic import SecretStr

from kubemta.v1 import message_pb2
from kubemta_common.errors import PublishFailed
from kubemta_ingress.acceptance import MailAcceptance
from kubemta_ingress.api import create_app
from kubemta_ingress.api_auth import BearerAuth, Principal, StaticTokenVerifier
from kubemta_ingress.api_request_message import IN_LOOP_BODY, OFF_LOOP_BUILDS, MessageBuilder
from kubemta_ingress.api_send import SendingApi
from kubemta_ingress.check_service import CheckLimits, CheckService
from kubemta_ingress.data_budget import DataBudget
from kubemta_ingress.idempotency import Idempotency
from kubemta_ingress.policy import RelayPolicy
from kubemta_ingress.recipient_map import RecipientMap
from kubemta_ingress.recipient_verify import RecipientVerifier
from kubemta_ingress.users import Identity
from tests.harness.api_kit import CONFIG, GatedResolver
from tests.harness.fake_idempotency import FakeIdempotencyTracker
from tests.harness.fake_publisher import FakePublisher

HOSTNAME = "mta.api.test"
APP_TOKEN = "app-token-0123456789abcdef"
NO_IDENTITY_TOKEN = "empty-token-0123456789abcdef"
OPERATOR_TOKEN = "operator-token-0123456789abcdef"
APP = Principal("api-key", "apikey:shop", (Identity.parse("shop.example"), Identity.parse("alerts@ops.example")))
MAX_MESSAGE = 64 * 1024
MAX_REQUEST = 128 * 1024


class Tokens:
    """A TokenVerifier knowing two app tokens."""

    async def verify(self, token: str) -> Principal | None:
        return {APP_TOKEN: APP, NO_IDENTITY_TOKEN: Principal("api-key", "apikey:empty")}.get(token)


@dataclass
class Api:
    client: httpx.AsyncClient
    publisher: FakePublisher
    claims: FakeIdempotencyTracker

    async def send(self, body: object, *, token: str = APP_TOKEN, **headers: str) -> httpx.Response:
        return await self.client.post(
            "/v1/messages", json=body, headers={"Authorization": f"Bearer {token}", **headers}
        )

    def queued(self) -> message_pb2.AcceptedMessage:
        assert len(self.publisher.published) == 1
        return message_pb2.AcceptedMessage.FromString(self.publisher.published[0].body)


def build_api(
    publisher: FakePublisher, claims: FakeIdempotencyTracker, recipients: Path, budget: DataBudget | None = None
) -> httpx.AsyncClient:
    """The ingress API over an ASGI transport, its client at 10.1.2.3; local.example's recipients in `recipients`."""
    local = RecipientMap("local.example", recipients)
    acceptance = MailAcceptance(
        hostname=HOSTNAME,
        policy=RelayPolicy.create(["local.example"], []),
        max_recipients=10,
        max_message_size=MAX_MESSAGE,
        publisher=publisher,
        max_hops=20,
        recipients=RecipientVerifier(maps={"local.example": local}, lmtp={}, prober=None),
    )
    auth = BearerAuth([StaticTokenVerifier(SecretStr(OPERATOR_TOKEN)), Tokens()])
    checks = CheckService(CONFIG, GatedResolver(open_gate=True), CheckLimits())
    sending = SendingApi(acceptance, Idempotency(claims, 86400.0))
    app = create_app(checks, auth, sending, max_request=MAX_REQUEST, request_timeout=5, budget=budget)
    transport = httpx.ASGITransport(app=app, client=("10.1.2.3", 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://ingress", timeout=10)


@pytest.fixture(scope="module")
def recipients(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The valid recipients of local.example."""
    path = tmp_path_factory.mktemp("maps") / "local.example"
    path.write_text("staff\n")
    return path


@pytest.fixture
async def api(recipients: Path) -> AsyncIterator[Api]:
    publisher = FakePublisher()
    claims = FakeIdempotencyTracker()
    async with build_api(publisher, claims, recipients) as client:
        yield Api(client, publisher, claims)


MESSAGE = {
    "from": {"address": "orders@shop.example", "name": "Shop"},
    "to": [{"address": "alice@example.com"}],
    "cc": [{"address": "bob@example.net"}],
    "bcc": [{"address": "audit@example.org"}],
    "subject": "Your order",
    "text": "Thanks for your order.",
    "tags": ["order"],
}


def parsed(content: bytes) -> EmailMessage:
    message = email.message_from_bytes(content, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_a_json_message_is_queued_as_authenticated_mail_of_its_principal(api: Api) -> None:
    answer = await api.send(MESSAGE)
    assert answer.status_code == 202, answer.text
    body = answer.json()
    queued = api.queued()
    assert body["queue_id"] == queued.queue_id and body["recipients"] == 3
    assert body["message_id"] == queued.message_id and body["message_id"].endswith(f"@{HOSTNAME}>")
    assert queued.sender == "orders@shop.example"
    assert list(queued.recipients) == ["alice@example.com", "bob@example.net", "audit@example.org"]
    assert queued.trust == message_pb2.TRUST_AUTHENTICATED  # so the queue-manager DKIM-signs it
    assert queued.authenticated_user == "apikey:shop"
    assert queued.listener == "api"
    assert list(queued.tags) == ["order"]
    assert queued.client_address == "10.1.2.3"
    trace, _, rest = queued.content.partition(b"\r\n\t")
    assert trace.startswith(b"Received: from unknown ([10.1.2.3])")
    message = parsed(queued.content)
    assert f"with HTTP id {queued.queue_id}" in str(message["Received"])
    assert message["Subject"] == "Your order" and message["Bcc"] is None
    assert b"audit@example.org" not in queued.content.split(b"\r\n\r\n", 1)[0].split(b";", 1)[1]


async def test_no_202_without_the_broker_confirm(api: Api) -> None:
    api.publisher.error = PublishFailed("no confirm")
    answer = await api.send(MESSAGE)
    assert answer.status_code == 503
    assert answer.headers["Retry-After"] == "5"
    assert answer.json()["status"] == "4.3.0"
    assert api.publisher.published == []


@pytest.mark.parametrize(
    ("headers", "detail"),
    [
        ({}, "a bearer token is required"),
        ({"Authorization": "Bearer unknown-token-0123456789"}, "not valid"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, "a bearer token is required"),
        ({"Authorization": "Bearer " + "a" * 9000}, "not valid"),
    ],
)
async def test_unknown_or_missing_credentials_get_401(api: Api, headers: dict[str, str], detail: str) -> None:
    answer = await api.client.post("/v1/messages", json=MESSAGE, headers=headers)
    assert answer.status_code == 401
    assert answer.headers["WWW-Authenticate"].startswith('Bearer realm="kubemta"')
    assert detail in answer.json()["detail"]
    assert api.publisher.published == []


async def test_credentials_without_identities_may_not_send(api: Api) -> None:
    for token in (OPERATOR_TOKEN, NO_IDENTITY_TOKEN):
        answer = await api.send(MESSAGE, token=token)
        assert answer.status_code == 403
        assert "no sender identities" in answer.json()["detail"]
    assert api.publisher.published == []


async def test_the_domain_check_is_for_the_operator_token_only(api: Api) -> None:
    answer = await api.client.get("/v1/domains/shop.example/check", headers={"Authorization": f"Bearer {APP_TOKEN}"})
    assert answer.status_code == 403
    answer = await api.client.get(
        "/v1/domains/shop.example/check", headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"}
    )
    assert answer.status_code == 200


@pytest.mark.parametrize(
    ("field", "value", "status", "detail"),
    [
        ("from", {"address": "ceo@bank.example"}, "5.7.1", "not owned by user apikey:shop"),
        ("from", {"address": "other@ops.example"}, "5.7.1", "not owned by user apikey:shop"),
        ("envelope_from", "bounces@elsewhere.example", "5.7.1", "not owned by user apikey:shop"),
    ],
)
async def test_a_sender_outside_the_identities_is_refused_403(
    api: Api, field: str, value: object, status: str, detail: str
) -> None:
    answer = await api.send({**MESSAGE, field: value})
    assert answer.status_code == 403, answer.text
    assert answer.json()["status"] == status and detail in answer.json()["detail"]
    assert api.publisher.published == []


async def test_an_owned_envelope_sender_with_a_foreign_from_is_refused_like_smtp(api: Api) -> None:
    """The author header check (sender_identity.py) runs on the composed message, as at SMTP DATA."""
    answer = await api.send(
        {**MESSAGE, "from": {"address": "ceo@bank.example"}, "envelope_from": "orders@shop.example"}
    )
    assert answer.status_code == 403
    assert answer.json() == {"detail": "From header not owned by user", "status": "5.7.1", "reason": "from_not_owned"}


async def test_invalid_input_names_the_field(api: Api) -> None:
    answer = await api.send({**MESSAGE, "subject": "x\r\nBcc: victim@example.com"})
    assert answer.status_code == 422
    assert answer.json()["detail"][0]["loc"][:2] == ["body", "subject"]
    answer = await api.send({**MESSAGE, "unknown": 1})
    assert answer.status_code == 422
    assert answer.json()["detail"][0]["loc"] == ["body", "unknown"]
    answer = await api.client.post(
        "/v1/messages",
        content=b"{not json",
        headers={"Authorization": f"Bearer {APP_TOKEN}", "Content-Type": "application/json"},
    )
    assert answer.status_code == 422
    assert api.publisher.published == []


async def test_a_refused_recipient_refuses_the_whole_message(api: Api) -> None:
    """The local recipient check of RCPT (recipient_verify.py) runs for every recipient; one refusal refuses all."""
    rcpts = [{"address": "staff@local.example"}, {"address": "nobody@local.example"}, {"address": "x@example.com"}]
    answer = await api.send({**MESSAGE, "to": rcpts, "cc": [], "bcc": []})
    assert answer.status_code == 422, answer.text
    [refused] = answer.json()["recipients"]
    assert refused["recipient"] == "nobody@local.example"
    assert (refused["status"], refused["reason"]) == ("5.1.1", "unknown_recipient")
    assert api.publisher.published == []


async def test_too_many_recipients_are_refused_before_anything_else(api: Api) -> None:
    many = [{"address": f"user{n}@example.com"} for n in range(11)]
    answer = await api.send({**MESSAGE, "to": many, "cc": [], "bcc": []})
    assert answer.status_code == 422
    assert "10" in json.dumps(answer.json()["detail"])
    assert api.publisher.published == []


async def test_over_the_size_limits_is_413(api: Api) -> None:
    big = {**MESSAGE, "text": "x" * (MAX_MESSAGE + 1)}
    answer = await api.send(big)
    assert answer.status_code == 413
    assert answer.json()["status"] == "5.3.4"
    huge = {**MESSAGE, "text": "x" * (MAX_REQUEST + 1)}
    answer = await api.send(huge)
    assert answer.status_code == 413
    assert "larger than" in answer.json()["detail"]
    assert api.publisher.published == []


async def test_other_content_types_are_415(api: Api) -> None:
    answer = await api.client.post(
        "/v1/messages",
        content=b"hello",
        headers={"Authorization": f"Bearer {APP_TOKEN}", "Content-Type": "text/plain"},
    )
    assert answer.status_code == 415


RAW = (
    b"From: Alerts <alerts@ops.example>\r\n"
    b"To: oncall@example.com\r\n"
    b"Subject: disk full\r\n"
    b"Message-ID: <raw-1@ops.example>\r\n"
    b"\r\n"
    b"The disk is full.\r\n"
)


async def post_raw(api: Api, content: bytes, **params: str | list[str]) -> httpx.Response:
    return await api.client.post(
        "/v1/messages",
        content=content,
        params=params,
        headers={"Authorization": f"Bearer {APP_TOKEN}", "Content-Type": "message/rfc822"},
    )


async def test_a_raw_message_is_queued_with_its_envelope_from_the_query_or_headers(api: Api) -> None:
    answer = await post_raw(api, RAW)
    assert answer.status_code == 202, answer.text
    queued = api.queued()
    assert queued.sender == "alerts@ops.example" and list(queued.recipients) == ["oncall@example.com"]
    assert queued.message_id == "<raw-1@ops.example>" == answer.json()["message_id"]
    api.publisher.published.clear()
    answer = await post_raw(api, RAW, to=["pager@example.com", "oncall@example.com"], **{"from": "alerts@ops.example"})
    assert answer.status_code == 202, answer.text
    assert list(api.queued().recipients) == ["pager@example.com", "oncall@example.com"]


async def test_raw_messages_get_the_smtp_content_rules(api: Api) -> None:
    looped = b"".join(b"Received: from a by b; Mon, 1 Jan 2024 00:00:00 +0000\r\n" for _ in range(20)) + RAW
    answer = await post_raw(api, looped)
    assert answer.status_code == 422 and answer.json()["status"] == "5.4.6"
    foreign = RAW.replace(b"From: Alerts <alerts@ops.example>", b"From: ceo@bank.example")
    answer = await post_raw(api, foreign, **{"from": "alerts@ops.example"})
    assert answer.status_code == 403 and answer.json()["reason"] == "from_not_owned"
    assert api.publisher.published == []


async def test_a_repeated_idempotency_key_returns_the_first_answer_and_queues_nothing(api: Api) -> None:
    first = await api.send(MESSAGE, **{"Idempotency-Key": '"order-42"'})
    assert first.status_code == 202
    queued = api.queued()
    assert queued.dedup_key.startswith("idem:")
    api.claims.queued(queued.dedup_key.removeprefix("idem:"), queued.queue_id)
    again = await api.send(MESSAGE, **{"Idempotency-Key": '"order-42"'})
    assert again.status_code == 202
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert len(api.publisher.published) == 1


async def test_idempotency_key_conflicts_and_an_unreachable_tracker(api: Api) -> None:
    first = await api.send(MESSAGE, **{"Idempotency-Key": "k-1"})
    assert first.status_code == 202
    in_flight = await api.send(MESSAGE, **{"Idempotency-Key": "k-1"})  # the tracker has not seen it queued yet
    assert in_flight.status_code == 409 and in_flight.headers["Retry-After"] == "1"
    other = await api.send({**MESSAGE, "subject": "another"}, **{"Idempotency-Key": "k-1"})
    assert other.status_code == 422 and "different request" in other.json()["detail"]
    api.claims.unavailable = True
    down = await api.send(MESSAGE, **{"Idempotency-Key": "k-2"})
    assert down.status_code == 503 and down.headers["Retry-After"] == "5"
    bad = await api.send(MESSAGE, **{"Idempotency-Key": '"unterminated'})
    assert bad.status_code == 400
    assert len(api.publisher.published) == 1


async def test_a_failed_publish_releases_the_idempotency_key(api: Api) -> None:
    api.publisher.error = PublishFailed("no confirm")
    answer = await api.send(MESSAGE, **{"Idempotency-Key": "k-3"})
    assert answer.status_code == 503
    assert [call[0] for call in api.claims.calls] == ["claim", "release"]
    api.publisher.error = None
    answer = await api.send(MESSAGE, **{"Idempotency-Key": "k-3"})
    assert answer.status_code == 202


async def test_the_openapi_document_describes_both_bodies(api: Api) -> None:
    answer = await api.client.get("/openapi.json")
    assert answer.status_code == 200
    document = answer.json()
    operation = document["paths"]["/v1/messages"]["post"]
    assert set(operation["requestBody"]["content"]) == {"application/json", "message/rfc822"}
    assert {"202", "401", "403", "409", "413", "415", "422", "503"} <= set(operation["responses"])
    schemas = document["components"]["schemas"]
    assert "from" in schemas["MessageRequest"]["properties"]
    refs = [part for part in json.dumps(document).split('"$ref": "')[1:]]
    for ref in refs:
        name = ref.split('"', 1)[0].removeprefix("#/components/schemas/")
        assert name in schemas, name


async def test_accepted_and_refused_are_counted(api: Api) -> None:
    before = sample("kubemta_api_messages_total", result="queued")
    refused = sample("kubemta_api_messages_total", result="refused")
    await api.send(MESSAGE)
    await api.send({**MESSAGE, "from": {"address": "x@bank.example"}})
    assert sample("kubemta_api_messages_total", result="queued") == before + 1
    assert sample("kubemta_api_messages_total", result="refused") == refused + 1


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=30),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=10), children, max_size=3),
    max_leaves=8,
)
fields = st.sampled_from(["from", "to", "cc", "bcc", "subject", "text", "html", "headers", "tags", "attachments"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(changes=st.dictionaries(fields, json_values, max_size=3))
async def test_hostile_json_never_gets_a_server_error(recipients: Path, changes: dict[str, object]) -> None:
    publisher = FakePublisher()
    async with build_api(publisher, FakeIdempotencyTracker(), recipients) as client:
        answer = await client.post(
            "/v1/messages", json={**MESSAGE, **changes}, headers={"Authorization": f"Bearer {APP_TOKEN}"}
        )
    assert answer.status_code in {202, 403, 413, 422}, answer.text
    if answer.status_code != 202:
        assert publisher.published == []


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=400))
async def test_hostile_raw_bodies_never_get_a_server_error(recipients: Path, raw: bytes) -> None:
    publisher = FakePublisher()
    async with build_api(publisher, FakeIdempotencyTracker(), recipients) as client:
        answer = await client.post(
            "/v1/messages",
            content=raw,
            params={"from": "alerts@ops.example", "to": "x@example.com"},
            headers={"Authorization": f"Bearer {APP_TOKEN}", "Content-Type": "message/rfc822"},
        )
    assert answer.status_code in {202, 403, 413, 422}, answer.text


async def test_an_attachment_arrives_as_the_bytes_the_client_encoded(api: Api) -> None:
    payload = bytes(range(256)) * 4
    attachment = {"filename": "data.bin", "content_type": "application/octet-stream"}
    attachment["content"] = base64.b64encode(payload).decode()
    answer = await api.send({**MESSAGE, "attachments": [attachment]})
    assert answer.status_code == 202, answer.text
    message = parsed(api.queued().content)
    [part] = list(message.iter_attachments())
    assert part.get_filename() == "data.bin"
    assert part.get_content() == payload


async def test_a_raw_message_without_message_id_is_answered_with_the_one_the_msa_added(api: Api) -> None:
    bare = RAW.replace(b"Message-ID: <raw-1@ops.example>\r\n", b"")
    answer = await post_raw(api, bare)
    assert answer.status_code == 202, answer.text
    queued = api.queued()
    assert answer.json()["message_id"] == queued.message_id == f"<{queued.queue_id}@{HOSTNAME}>"
    assert f"Message-ID: <{queued.queue_id}@{HOSTNAME}>".encode() in queued.content


async def test_request_bodies_share_the_smtp_sessions_data_budget(recipients: Path) -> None:
    """KUBEMTA_MESSAGE_DATA_BUDGET bounds what SMTP sessions and API requests hold together: a body that does not
    fit gets 503 with Retry-After (SMTP's 452 4.3.1), and every request gives back what it held."""
    budget = DataBudget(8 * 1024)
    publisher = FakePublisher()
    refused = sample("kubemta_api_refused_requests_total", reason="no_room")
    async with build_api(publisher, FakeIdempotencyTracker(), recipients, budget) as client:
        headers = {"Authorization": f"Bearer {APP_TOKEN}"}
        answer = await client.post("/v1/messages", json={**MESSAGE, "text": "x" * 10_000}, headers=headers)
        assert answer.status_code == 503 and answer.headers["Retry-After"] == "5"
        assert budget.in_use == 0 and publisher.published == []
        assert sample("kubemta_api_refused_requests_total", reason="no_room") == refused + 1
        assert budget.reserve(8 * 1024 - 100)  # SMTP sessions hold all but 100 bytes now
        answer = await client.post("/v1/messages", json=MESSAGE, headers=headers)
        assert answer.status_code == 503
        budget.release(8 * 1024 - 100)
        answer = await client.post("/v1/messages", json=MESSAGE, headers=headers)
        assert answer.status_code == 202 and budget.in_use == 0


async def test_a_lost_confirm_keeps_the_idempotency_key_held(api: Api) -> None:
    """No confirm within the timeout: the message may be queued, so the claim is not released; a retry gets 409
    until the tracker knows the message (then the first answer), never a second copy."""
    api.publisher.error = PublishFailed("no confirm from the broker within 10s", maybe_published=True)
    answer = await api.send(MESSAGE, **{"Idempotency-Key": "k-lost"})
    assert answer.status_code == 503
    assert [call[0] for call in api.claims.calls] == ["claim"]
    api.publisher.error = None
    retry = await api.send(MESSAGE, **{"Idempotency-Key": "k-lost"})
    assert retry.status_code == 409 and api.publisher.published == []
    key = api.claims.calls[0][1]
    api.claims.queued(key, "QUEUEDATLAST0001")  # the first publish did reach the broker after all
    retry = await api.send(MESSAGE, **{"Idempotency-Key": "k-lost"})
    assert retry.status_code == 202 and retry.json()["queue_id"] == "QUEUEDATLAST0001"
    assert api.publisher.published == []


async def test_a_replayed_raw_message_names_the_message_id_of_the_first_answer(api: Api) -> None:
    bare = RAW.replace(b"Message-ID: <raw-1@ops.example>\r\n", b"")
    headers = {"Authorization": f"Bearer {APP_TOKEN}", "Content-Type": "message/rfc822", "Idempotency-Key": "raw-1"}
    first = await api.client.post("/v1/messages", content=bare, headers=headers)
    assert first.status_code == 202, first.text
    queued = api.queued()
    api.claims.queued(queued.dedup_key.removeprefix("idem:"), queued.queue_id)
    again = await api.client.post("/v1/messages", content=bare, headers=headers)
    assert again.status_code == 202 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()


@pytest.fixture
def building_threads(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """For each message the route builds (parse and compose, or parse_raw): whether on the event loop's thread."""
    on_loop: list[bool] = []
    build = MessageBuilder._build

    def recording(self: MessageBuilder, *args: object) -> object:
        try:
            asyncio.get_running_loop()
            on_loop.append(True)
        except RuntimeError:
            on_loop.append(False)
        return build(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(MessageBuilder, "_build", recording)
    return on_loop


async def test_a_small_body_is_built_on_the_loop_a_large_one_in_a_thread(
    api: Api, building_threads: list[bool]
) -> None:
    small = await api.send(MESSAGE)
    large = await api.send({**MESSAGE, "text": "x" * (IN_LOOP_BODY + 1)})
    assert (small.status_code, large.status_code) == (202, 202), large.text
    assert building_threads == [True, False]
    assert parsed(_content(api, 1)).get_content().startswith("x" * 100)


async def test_a_large_body_built_in_a_thread_is_refused_as_on_the_loop(api: Api, building_threads: list[bool]) -> None:
    bad = {**MESSAGE, "text": "x" * (IN_LOOP_BODY + 1), "subject": "=?utf-8?q?x=0D=0ABcc:_y?="}
    answer = await api.send(bad)
    assert answer.status_code == 422 and building_threads == [False]
    assert answer.json()["detail"][0]["loc"] == ["body", "subject"]
    raw = b"From: orders@shop.example\r\nTo: alice@example.com\r\n\r\n" + (b"y" * 80 + b"\r\n") * (IN_LOOP_BODY // 80)
    answer = await api.client.post(
        "/v1/messages",
        content=raw,
        headers={"Authorization": f"Bearer {APP_TOKEN}", "Content-Type": "message/rfc822"},
    )
    assert answer.status_code == 202, answer.text
    assert building_threads == [False, False] and len(api.publisher.published) == 1


def _content(api: Api, index: int) -> bytes:
    return message_pb2.AcceptedMessage.FromString(api.publisher.published[index].body).content


async def test_at_most_two_large_bodies_are_built_in_threads_at_once(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    running, peak, started, gate, lock = [0], [0], threading.Semaphore(0), threading.Event(), threading.Lock()
    build = MessageBuilder._build

    def held(self: MessageBuilder, *args: object) -> object:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        started.release()
        gate.wait(timeout=10)
        with lock:
            running[0] -= 1
        return build(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(MessageBuilder, "_build", held)
    large = {**MESSAGE, "text": "x" * (IN_LOOP_BODY + 1)}
    sends = [asyncio.create_task(api.send(large)) for _ in range(4)]
    try:
        for _ in range(OFF_LOOP_BUILDS):
            assert await asyncio.to_thread(started.acquire, timeout=10)
        await asyncio.sleep(0.2)  # time for a third build to start, were it let through
        assert running[0] == OFF_LOOP_BUILDS
    finally:
        gate.set()
    answers = await asyncio.wait_for(asyncio.gather(*sends), timeout=30)
    assert [answer.status_code for answer in answers] == [202] * 4
    assert peak[0] == OFF_LOOP_BUILDS
