"""Faults on the sending API, with the real broker: no 202 without the broker's confirm, and an app that retries
with its Idempotency-Key through a broker outage gets its message delivered exactly once.

The ingress reaches RabbitMQ through a TCP proxy this test controls (tests/harness/tcp_proxy.py); the other
services, the tracker included, reach it directly. The proxy first swallows everything (a silent broker: the
publish may or may not have reached it), then drops the connection, then lets it through again. The app
retries as the README's example does: the same key on 503 and 409, after Retry-After.
"""

import asyncio
import secrets
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import MailWorld
from tests.harness.ports import free_port
from tests.harness.rabbitmq import Vhost
from tests.harness.stack import SERVICES, Stack
from tests.harness.tcp_proxy import TcpProxy

pytestmark = [pytest.mark.broker, pytest.mark.e2e]

SENDER = "orders@shop.e2e.test"
RECIPIENT = "customer@mx.e2e.test"
READ_TOKEN = "svc:" + secrets.token_hex(16)
WAIT = 90.0


def api_key(workdir: Path) -> str:
    """An API key for SENDER's domain, in the keys file the ingress reads."""
    from kubemta_ingress.api_keys import new_key, render
    from kubemta_ingress.users import Identity

    made = new_key("shop", (Identity.parse("shop.e2e.test"),))
    (workdir / "api-keys").write_text(render([made.entry]))
    return made.token


async def test_an_outage_answered_503_then_retried_with_the_key_delivers_once(
    stack: Stack, world: MailWorld, vhost: Vhost, tmp_path: Path
) -> None:
    mx = world.peer("mx1")
    await mx.start()
    key = api_key(tmp_path)
    proxy = TcpProxy("127.0.0.1", vhost.node.host, vhost.node.port)
    await proxy.start()
    api_port, tracker_port = free_port(), free_port()
    stack.env.update(world.env(smtp_listen=f"127.0.0.1:{free_port()}", publish_timeout="2s"))
    stack.env.update(
        {
            "KUBEMTA_TRACKER_LISTEN": f"127.0.0.1:{tracker_port}",
            "KUBEMTA_TRACKER_URL": f"http://127.0.0.1:{tracker_port}",
            "KUBEMTA_TRACKER_TOKEN": READ_TOKEN.split(":", 1)[1],
            "KUBEMTA_TRACKER_READ_TOKENS": READ_TOKEN,
            "KUBEMTA_INDEX_PATH": str(tmp_path / "tracker-index.sqlite3"),
            "KUBEMTA_IDEMPOTENCY_CLAIM_TTL": "5s",
            "KUBEMTA_EVENTS_CONFIRM_TIMEOUT": "0.5s",
        }
    )
    through_proxy = {
        "KUBEMTA_AMQP_URL": f"amqp://guest:guest@127.0.0.1:{proxy.port}/{vhost.name}",
        "KUBEMTA_HTTP_LISTEN": f"127.0.0.1:{api_port}",
        "KUBEMTA_API_KEYS_FILE": str(tmp_path / "api-keys"),
    }
    message = {
        "from": {"address": SENDER},
        "to": [{"address": RECIPIENT}],
        "subject": "exactly once",
        "text": "sent through an outage",
    }
    headers = {"Authorization": f"Bearer {key}", "Idempotency-Key": '"order-outage-1"'}
    try:
        await stack.start(("tracker", *SERVICES), extra_env={"ingress": through_proxy})
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{api_port}", timeout=30) as client:
            proxy.blackhole()  # connected, but no confirm will ever come back
            answer = await client.post("/v1/messages", json=message, headers=headers)
            assert answer.status_code == 503, answer.text  # never 202 without the confirm
            assert answer.headers["Retry-After"]
            await proxy.cut()
            await proxy.restore()
            statuses = [answer.status_code]
            async with asyncio.timeout(WAIT):
                while answer.status_code != 202:
                    await asyncio.sleep(1)
                    answer = await client.post("/v1/messages", json=message, headers=headers)
                    statuses.append(answer.status_code)
                    assert answer.status_code in (202, 409, 503), answer.text
            queue_id = answer.json()["queue_id"]
        [delivered] = await mx.wait_for_messages(1, timeout=WAIT)
        assert b"Subject: exactly once" in delivered.content
        assert f"with HTTP id {queue_id}".encode() in delivered.content  # the 202 names the message delivered
        await asyncio.sleep(3.0)  # a second copy, if there were one, would arrive by now
        assert len(mx.messages) == 1, f"delivered {len(mx.messages)} times; answers {statuses}"
    finally:
        await proxy.stop()
