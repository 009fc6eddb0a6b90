"""End to end, an app team's journey: a Kubernetes app sends mail over HTTP with its ServiceAccount token.

The six services run as processes (ingress with its HTTP API, queue-manager with DKIM keys,
dns-resolver, delivery-worker, tracker, webhooks) on the real broker. The app's token is minted
by a loopback stand-in of the Kubernetes API (tests/harness/fake_kube_api.py: there is no cluster
here), which the ingress asks with the real `kubernetes` client's TokenReview, over HTTPS with its
own CA and caller token, as it would in a pod. The message goes to a real SMTP peer found through
the real DNS server; its DKIM signature is verified by dkimpy against a second real name server
serving the key `kubemta-admin dkim generate` made; the app's webhook endpoint (a real HTTP
server) gets the signed `message.delivered` event. The same token as the SMTP AUTH PLAIN password
sends through the submission listener (STARTTLS with a test CA), for SMTP-only apps.

Refusals, each with nothing queued: an unknown token and a token minted for another audience
(401), a sender outside the ServiceAccount's identities (403), a ServiceAccount not in the identities file
(401).
"""

import asyncio
import base64
import json
import secrets
import smtplib
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import MailWorld
from tests.harness.dkim_verify import TxtLookup, dkimpy_verdicts, generate_key, signature_tags
from tests.harness.dns_server import DnsServer, zone_text
from tests.harness.fake_kube_api import FakeKubeApi
from tests.harness.ports import free_port
from tests.harness.smtp_peer import ScriptedPeer
from tests.harness.stack import SERVICES, Stack
from tests.harness.tls_ca import TestCa
from tests.harness.webhook_receiver import WebhookReceiver

pytestmark = [pytest.mark.broker, pytest.mark.e2e]

APP_DOMAIN = "shop.journey.test"
SELECTOR = "k2026"
NAMESPACE, ACCOUNT = "shop", "checkout"
AUDIENCE = "kubemta"  # KUBEMTA_SERVICEACCOUNT_AUDIENCE's default: the app's projected token is bound to it
SUBMITTER = f"system:serviceaccount:{NAMESPACE}:{ACCOUNT}"
RECIPIENT = "customer@mx.e2e.test"  # MX mx1 of the e2e world's zone
WEBHOOK_SECRET = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
READ_TOKEN = "svc:" + secrets.token_hex(16)
DKIM_NS_OCTET = 81  # outside tests/e2e/conftest.py HOSTS
WAIT = 60.0


@dataclass
class Journey:
    api: httpx.AsyncClient
    kube: FakeKubeApi
    mx: ScriptedPeer
    webhooks: WebhookReceiver
    dkim: TxtLookup
    submission: str
    ca: TestCa

    def message(self, **changes: object) -> dict[str, object]:
        body: dict[str, object] = {
            "from": {"address": f"orders@{APP_DOMAIN}", "name": "Shop"},
            "to": [{"address": RECIPIENT}],
            "subject": "Your order 42",
            "text": "Thank you for your order.",
            "tags": ["order"],
        }
        body.update(changes)
        return body

    async def send(self, token: str, **changes: object) -> httpx.Response:
        return await self.api.post(
            "/v1/messages", json=self.message(**changes), headers={"Authorization": f"Bearer {token}"}
        )


@pytest.fixture
async def journey(stack: Stack, world: MailWorld, tmp_path: Path, loopback_net: str) -> AsyncIterator[Journey]:
    keys = tmp_path / "dkim-keys"
    zone_line = generate_key(keys, APP_DOMAIN, SELECTOR, "rsa")
    record = zone_line.split(" IN TXT ", 1)[1].removeprefix(f"{SELECTOR}._domainkey.{APP_DOMAIN}. ")
    ns_address = f"{loopback_net}.{DKIM_NS_OCTET}"
    dkim_dns = DnsServer(
        tmp_path / "dkim-dns",
        ns_address,
        free_port(ns_address),
        zones={APP_DOMAIN: zone_text(APP_DOMAIN, [f"{SELECTOR}._domainkey TXT {record}"], ttl=30)},
    )
    dkim_dns.start()
    kube = FakeKubeApi.start(tmp_path / "kube-api")
    webhooks = await WebhookReceiver(WEBHOOK_SECRET).start()
    mx = world.peer("mx1")
    await mx.start()
    ca = TestCa.create(tmp_path / "ca", "journey CA")
    cert, key = ca.issue("mta.kubemta.test")
    identities = tmp_path / "serviceaccounts"
    identities.write_text(f"{NAMESPACE}/{ACCOUNT}:{APP_DOMAIN}\n", encoding="utf-8")
    endpoints = tmp_path / "webhooks.json"
    endpoints.write_text(
        json.dumps(
            [
                {
                    "name": "shop",
                    "url": webhooks.url,
                    "secret": WEBHOOK_SECRET,
                    "submitters": [SUBMITTER],
                    "events": ["delivered", "bounced"],
                }
            ]
        ),
        encoding="utf-8",
    )
    api_port, submission_port, tracker_port, smtp_port = free_port(), free_port(), free_port(), free_port()
    stack.env.update(world.env(smtp_listen=f"127.0.0.1:{smtp_port}", relay_networks=""))
    stack.env.update(
        {
            "KUBEMTA_HTTP_LISTEN": f"127.0.0.1:{api_port}",
            "KUBEMTA_SUBMISSION_LISTEN": f"127.0.0.1:{submission_port}",
            "KUBEMTA_TLS_CERT_FILE": str(cert),
            "KUBEMTA_TLS_KEY_FILE": str(key),
            "KUBEMTA_SERVICEACCOUNT_IDENTITIES_FILE": str(identities),
            "KUBEMTA_KUBERNETES_API_URL": kube.url,
            "KUBEMTA_KUBERNETES_TOKEN_FILE": str(kube.caller_token_file),
            "KUBEMTA_KUBERNETES_CA_FILE": str(kube.ca_file),
            "KUBEMTA_DKIM_KEYS_DIR": str(keys),
            "KUBEMTA_TRACKER_LISTEN": f"127.0.0.1:{tracker_port}",
            "KUBEMTA_TRACKER_URL": f"http://127.0.0.1:{tracker_port}",
            "KUBEMTA_TRACKER_TOKEN": READ_TOKEN.split(":", 1)[1],
            "KUBEMTA_TRACKER_READ_TOKENS": READ_TOKEN,
            "KUBEMTA_INDEX_PATH": str(tmp_path / "tracker-index.sqlite3"),
            "KUBEMTA_EVENTS_CONFIRM_TIMEOUT": "0.5s",
            "KUBEMTA_WEBHOOKS_FILE": str(endpoints),
        }
    )
    try:
        await stack.start(("tracker", *SERVICES, "webhooks"))
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{api_port}", timeout=WAIT) as api:
            yield Journey(
                api, kube, mx, webhooks, TxtLookup(ns_address, dkim_dns.port), f"127.0.0.1:{submission_port}", ca
            )
    finally:
        await webhooks.stop()
        kube.stop()
        dkim_dns.stop()


async def received_by_mx(mx: ScriptedPeer, count: int) -> list[bytes]:
    return [message.content for message in await mx.wait_for_messages(count, timeout=WAIT)]


async def test_an_app_sends_with_its_serviceaccount_token_and_hears_back(journey: Journey) -> None:
    token = journey.kube.mint(NAMESPACE, ACCOUNT, audiences=[AUDIENCE])
    answer = await journey.send(token)
    assert answer.status_code == 202, answer.text
    queue_id = answer.json()["queue_id"]

    [delivered] = await received_by_mx(journey.mx, 1)
    assert b"Subject: Your order 42" in delivered
    [tags] = signature_tags(delivered)
    assert tags[b"d"] == APP_DOMAIN.encode() and tags[b"s"] == SELECTOR.encode()
    assert dkimpy_verdicts(delivered, journey.dkim) == [True]

    hooks = await journey.webhooks.wait_for(1, within=WAIT)
    event = hooks[0].json
    assert event["type"] == "message.delivered"
    assert event["queue_id"] == queue_id
    assert event["submitter"] == SUBMITTER
    assert event["tags"] == ["order"]
    assert [r["recipient"] for r in event["recipients"]] == [RECIPIENT]
    assert hooks[0].verified


async def test_foreign_tokens_and_senders_are_refused(journey: Journey) -> None:
    unknown = journey.kube.mint(NAMESPACE, ACCOUNT, audiences=[AUDIENCE])
    del journey.kube.tokens[unknown]  # well formed, but the API server never issued it
    answer = await journey.send(unknown)
    assert answer.status_code == 401 and answer.headers["WWW-Authenticate"].startswith("Bearer")

    other_audience = journey.kube.mint(NAMESPACE, ACCOUNT, audiences=["vault"])
    answer = await journey.send(other_audience)
    assert answer.status_code == 401

    token = journey.kube.mint(NAMESPACE, ACCOUNT, audiences=[AUDIENCE])
    answer = await journey.send(token, **{"from": {"address": "ceo@bank.example"}})
    assert answer.status_code == 403
    assert answer.json()["status"] == "5.7.1" and SUBMITTER in answer.json()["detail"]

    # a valid token of an account the identities file does not list
    unmapped = journey.kube.mint(NAMESPACE, "reports", audiences=[AUDIENCE])
    answer = await journey.send(unmapped)
    assert answer.status_code == 401

    await asyncio.sleep(1.0)  # nothing was queued: nothing arrives
    assert journey.mx.messages == []


def submit_over_smtp(server: str, ca_file: Path, token: str, message: bytes) -> dict[str, tuple[int, bytes]]:
    host, port = server.rsplit(":", 1)
    context = ssl.create_default_context(cafile=str(ca_file))
    context.check_hostname = False
    with smtplib.SMTP(host, int(port), timeout=WAIT) as client:
        client.ehlo("app.shop.svc")
        client.starttls(context=context)
        client.ehlo("app.shop.svc")
        client.login(f"{NAMESPACE}/{ACCOUNT}", token)
        return client.sendmail(f"orders@{APP_DOMAIN}", [RECIPIENT], message)


async def test_an_smtp_only_app_uses_its_token_as_the_auth_password(journey: Journey) -> None:
    token = journey.kube.mint(NAMESPACE, ACCOUNT, audiences=[AUDIENCE])
    message = (f"From: Shop <orders@{APP_DOMAIN}>\r\nTo: {RECIPIENT}\r\nSubject: over SMTP\r\n\r\nhello\r\n").encode()
    refused = await asyncio.to_thread(submit_over_smtp, journey.submission, journey.ca.cert_file, token, message)
    assert refused == {}
    [delivered] = await received_by_mx(journey.mx, 1)
    assert b"Subject: over SMTP" in delivered
    assert dkimpy_verdicts(delivered, journey.dkim) == [True]
