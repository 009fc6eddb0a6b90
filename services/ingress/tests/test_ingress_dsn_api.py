"""POST /v1/messages' DSN options (RFC 3461 NOTIFY, RET, ENVID): `"dsn"` in JSON, `notify`/`ret`/`envid` in the
query of a raw message; judged as SMTP judges them, carried on the published AcceptedMessage, 422 naming the field.

The route runs in the real FastAPI app over httpx's ASGI transport; the broker is the FakePublisher.
"""

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr, ValidationError

from kubemta.v1 import message_pb2
from kubemta_common.dsn_parameters import envid_value, parse_envid
from kubemta_ingress.acceptance import MailAcceptance
from kubemta_ingress.api import create_app
from kubemta_ingress.api_auth import BearerAuth, Principal, StaticTokenVerifier
from kubemta_ingress.api_message_model import DsnRequest
from kubemta_ingress.api_send import SendingApi
from kubemta_ingress.check_service import CheckLimits, CheckService
from kubemta_ingress.idempotency import Idempotency
from kubemta_ingress.policy import RelayPolicy
from kubemta_ingress.users import Identity
from tests.harness.api_kit import CONFIG, GatedResolver
from tests.harness.fake_idempotency import FakeIdempotencyTracker
from tests.harness.fake_publisher import FakePublisher

TOKEN = "app-token-0123456789abcdef"
APP = Principal("api-key", "apikey:shop", (Identity.parse("shop.example"),))
MESSAGE = {
    "from": {"address": "orders@shop.example"},
    "to": [{"address": "alice@example.com"}],
    "bcc": [{"address": "audit@example.org"}],
    "subject": "Your order",
    "text": "Thanks.",
}
RAW = b"From: orders@shop.example\r\nTo: alice@example.com\r\nSubject: raw\r\n\r\nHello.\r\n"


class Tokens:
    async def verify(self, token: str) -> Principal | None:
        return APP if token == TOKEN else None


@dataclass
class Api:
    client: httpx.AsyncClient
    publisher: FakePublisher

    async def send(self, body: object) -> httpx.Response:
        return await self.client.post("/v1/messages", json=body, headers={"Authorization": f"Bearer {TOKEN}"})

    async def send_raw(self, params: dict[str, str]) -> httpx.Response:
        headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "message/rfc822"}
        return await self.client.post("/v1/messages", content=RAW, params=params, headers=headers)

    def queued(self) -> message_pb2.AcceptedMessage:
        assert len(self.publisher.published) == 1
        return message_pb2.AcceptedMessage.FromString(self.publisher.published[0].body)


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    publisher = FakePublisher()
    acceptance = MailAcceptance(
        hostname="mta.api.test",
        policy=RelayPolicy.create([], []),
        max_recipients=10,
        max_message_size=64 * 1024,
        publisher=publisher,
    )
    auth = BearerAuth([StaticTokenVerifier(SecretStr("operator-token-0123456789abcdef")), Tokens()])
    checks = CheckService(CONFIG, GatedResolver(open_gate=True), CheckLimits())
    sending = SendingApi(acceptance, Idempotency(FakeIdempotencyTracker(), 86400.0))
    app = create_app(checks, auth, sending, max_request=128 * 1024, request_timeout=5)
    transport = httpx.ASGITransport(app=app, client=("10.1.2.3", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://ingress", timeout=10) as client:
        yield Api(client, publisher)


def notify_of(dsn: message_pb2.RecipientDsn) -> tuple[bool, bool, bool, bool, bool]:
    return dsn.notify_given, dsn.notify_never, dsn.notify_success, dsn.notify_failure, dsn.notify_delay


# -- JSON --


async def test_json_dsn_options_are_carried_for_every_recipient(api: Api) -> None:
    dsn = {"notify": ["success", "delay"], "ret": "full", "envid": "order 42+x=y"}
    answer = await api.send({**MESSAGE, "dsn": dsn})
    assert answer.status_code == 202, answer.text
    queued = api.queued()
    assert queued.ret == message_pb2.DSN_RET_FULL and queued.envid == "order 42+x=y"
    assert set(queued.recipient_dsn) == set(queued.recipients) == {"alice@example.com", "audit@example.org"}
    for recipient_dsn in queued.recipient_dsn.values():
        assert notify_of(recipient_dsn) == (True, False, True, False, True)
        assert not recipient_dsn.orcpt_type


async def test_json_never_and_hdrs(api: Api) -> None:
    answer = await api.send({**MESSAGE, "dsn": {"notify": ["never"], "ret": "hdrs"}})
    assert answer.status_code == 202, answer.text
    queued = api.queued()
    assert queued.ret == message_pb2.DSN_RET_HDRS and queued.envid == ""
    assert notify_of(queued.recipient_dsn["alice@example.com"]) == (True, True, False, False, False)


async def test_json_without_dsn_asks_for_the_default(api: Api) -> None:
    for body in (MESSAGE, {**MESSAGE, "dsn": {}}, {**MESSAGE, "dsn": None}):
        api.publisher.published.clear()
        assert (await api.send(body)).status_code == 202
        queued = api.queued()
        assert (queued.ret, queued.envid, dict(queued.recipient_dsn)) == (message_pb2.DSN_RET_UNSPECIFIED, "", {})


@pytest.mark.parametrize(
    ("dsn", "loc"),
    [
        ({"notify": ["never", "success"]}, ["body", "dsn", "notify"]),
        ({"notify": []}, ["body", "dsn", "notify"]),
        ({"notify": ["bounce"]}, ["body", "dsn", "notify", 0]),
        ({"notify": ["SUCCESS"]}, ["body", "dsn", "notify", 0]),
        ({"notify": "success"}, ["body", "dsn", "notify"]),
        ({"ret": "none"}, ["body", "dsn", "ret"]),
        ({"ret": "FULL,HDRS"}, ["body", "dsn", "ret"]),
        ({"envid": ""}, ["body", "dsn", "envid"]),
        ({"envid": "é"}, ["body", "dsn", "envid"]),
        ({"envid": "a\r\nb"}, ["body", "dsn", "envid"]),
        ({"envid": "a\x00"}, ["body", "dsn", "envid"]),
        ({"envid": "a" * 101}, ["body", "dsn", "envid"]),
        ({"envid": "+" * 34}, ["body", "dsn", "envid"]),  # 102 characters as xtext
        ({"orcpt": "rfc822;a@example.com"}, ["body", "dsn", "orcpt"]),
        ("yes", ["body", "dsn"]),
    ],
)
async def test_json_bad_dsn_is_422_naming_the_field(api: Api, dsn: object, loc: list[object]) -> None:
    answer = await api.send({**MESSAGE, "dsn": dsn})
    assert answer.status_code == 422, answer.text
    assert [error["loc"] for error in answer.json()["detail"]] == [loc]
    assert api.publisher.published == []


async def test_the_longest_envid_is_accepted(api: Api) -> None:
    envid = "+" * 33 + "x"  # 99 + 1 characters as xtext
    answer = await api.send({**MESSAGE, "dsn": {"envid": envid}})
    assert answer.status_code == 202, answer.text
    assert api.queued().envid == envid


# -- message/rfc822 --


async def test_raw_dsn_query_parameters_are_carried(api: Api) -> None:
    answer = await api.send_raw({"notify": "Success,failure", "ret": "HDRS", "envid": "raw 1"})
    assert answer.status_code == 202, answer.text
    queued = api.queued()
    assert queued.ret == message_pb2.DSN_RET_HDRS and queued.envid == "raw 1"
    assert notify_of(queued.recipient_dsn["alice@example.com"]) == (True, False, True, True, False)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"notify": "never,delay"}, "notify"),
        ({"notify": ""}, "notify"),
        ({"notify": "success,,delay"}, "notify"),
        ({"ret": "headers"}, "ret"),
        ({"envid": ""}, "envid"),
        ({"envid": "\x1b[31m"}, "envid"),
        ({"envid": "x" * 101}, "envid"),
    ],
)
async def test_raw_bad_dsn_query_is_422_naming_the_parameter(api: Api, params: dict[str, str], field: str) -> None:
    answer = await api.send_raw(params)
    assert answer.status_code == 422, answer.text
    assert [error["loc"] for error in answer.json()["detail"]] == [["query", field]]
    assert api.publisher.published == []


# -- the OpenAPI document --


async def test_openapi_describes_the_dsn_options(api: Api) -> None:
    answer = await api.client.get("/openapi.json")
    assert answer.status_code == 200
    document = answer.json()
    schemas = document["components"]["schemas"]
    assert set(schemas["DsnRequest"]["properties"]) == {"notify", "ret", "envid"}
    assert "dsn" in schemas["MessageRequest"]["properties"]
    parameters = {p["name"] for p in document["paths"]["/v1/messages"]["post"]["parameters"]}
    assert {"notify", "ret", "envid"} <= parameters


# -- the model against hostile input --

json_value = st.none() | st.booleans() | st.integers() | st.text(max_size=120)
notify_word = st.sampled_from(["success", "failure", "delay", "never", "SUCCESS", ""]) | st.text(max_size=8)
dsn_fields = st.fixed_dictionaries(
    {},
    optional={
        "notify": st.lists(
            st.sampled_from(["success", "failure", "delay", "never", "SUCCESS", ""]) | st.text(max_size=8)
        )
        | json_value,
        "ret": st.sampled_from(["full", "hdrs", "FULL", ""]) | json_value,
        "envid": json_value,
    },
)


@given(dsn_fields)
def test_the_model_refuses_only_with_a_validation_error_and_what_it_takes_fits_the_bus(
    fields: dict[str, object],
) -> None:
    try:
        request = DsnRequest.model_validate(fields)
    except ValidationError:
        return
    dsn = request.bus()
    assert dsn.notify is None or dsn.notify.notify_given
    if dsn.envid:
        written = envid_value(dsn.envid)
        assert written is not None and parse_envid(written) == dsn.envid
