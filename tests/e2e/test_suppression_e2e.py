"""End to end, the suppression list: a recipient that hard-bounced as invalid is refused to every outbound sender
(at RCPT, and by the sending API) through the whole cluster's list, and an operator lists, removes and adds
entries with `kubemta-admin suppression`. The five services run as processes on the real broker (the four of
the pipeline and the tracker, which indexes the `suppressions` stream), mail goes over smtplib to a real SMTP
peer found through the real DNS server, and the bounce comes back to the sender's own MX."""

import asyncio
import json
import subprocess
from typing import Any

import httpx
import pytest

from kubemta_ingress.api_keys import new_key, render
from kubemta_ingress.users import Identity
from tests.e2e.conftest import MailWorld, make_message, send
from tests.e2e.test_tracking_e2e import ADMIN_TOKEN, Tracked, start_tracked
from tests.harness.ports import free_port
from tests.harness.stack import Stack

pytestmark = [pytest.mark.broker, pytest.mark.e2e]

SENDER = "alice@sender.e2e.test"
GONE = "gone@other.e2e.test"
GMAIL_UNKNOWN = (
    "550 5.1.1 The email account that you tried to reach does not exist. Please try double-checking the "
    "recipient's email address for typos or unnecessary spaces."
)
WAIT = 30.0


def suppression(tracked: Tracked, *args: str) -> subprocess.CompletedProcess[str]:
    """`kubemta-admin suppression ...` as a process, as an operator runs it."""
    return tracked.admin(*args, command="suppression")


async def listed(tracked: Tracked) -> list[dict[str, Any]]:
    done = await asyncio.to_thread(suppression, tracked, "list", "--json")
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    return list(answer["suppressions"])


async def until_suppressed(tracked: Tracked, address: str) -> dict[str, Any]:
    """The tracker's entry for `address` once it has one (asked over its API: a process per poll would cost more
    than the wait)."""
    token = ADMIN_TOKEN.split(":", 1)[1]
    async with httpx.AsyncClient(timeout=5, headers={"Authorization": f"Bearer {token}"}) as client:
        try:
            async with asyncio.timeout(WAIT):
                while True:
                    answer = await client.get(f"{tracked.tracker_url}/v1/suppressions/{address}")
                    if answer.status_code == 200:
                        entry: dict[str, Any] = answer.json()
                        return entry
                    await asyncio.sleep(0.3)
        except TimeoutError:
            pytest.fail(f"{address} never showed up on the suppression list")


@pytest.fixture
async def api_key(world: MailWorld) -> str:
    """A key of an app that may send as sender.e2e.test (the ingress reads the file at start)."""
    made = new_key("billing", (Identity.parse("@sender.e2e.test"),))
    (world.workdir / "api-keys").write_text(render([made.entry]))
    return made.token


@pytest.fixture
async def tracked(stack: Stack, world: MailWorld, api_key: str) -> Tracked:
    api_port = free_port()
    stack.env.update(
        {
            "KUBEMTA_SUPPRESSION_CACHE_TTL": "0s",  # an operator's removal counts at once in this test
            "KUBEMTA_HTTP_LISTEN": f"127.0.0.1:{api_port}",
            "KUBEMTA_API_KEYS_FILE": str(world.workdir / "api-keys"),
        }
    )
    started = await start_tracked(stack, world)
    started.api_url = f"http://127.0.0.1:{api_port}"  # type: ignore[attr-defined]
    return started


async def test_a_hard_bounce_suppresses_the_recipient_for_every_outbound_sender_until_an_operator_removes_it(
    tracked: Tracked, world: MailWorld, api_key: str
) -> None:
    mx3 = world.peer("mx3", rules={"gone": GMAIL_UNKNOWN})
    bounce_mx = world.peer("bounce-mx")
    await mx3.start()
    await bounce_mx.start()

    first = await send(tracked.smtp, SENDER, [GONE], make_message(SENDER, [GONE], "first try"))
    assert first.data is not None and first.data[0] == 250  # accepted: nobody knew yet
    [bounce] = await bounce_mx.wait_for_messages(1, timeout=WAIT)
    assert b"invalid recipient" in bounce.content.lower() or b"invalid_recipient" in bounce.content

    entry = await until_suppressed(tracked, GONE)
    assert entry["source"] == "bounce" and entry["reason"] == "invalid_recipient"
    assert GONE in [listed_entry["address"] for listed_entry in await listed(tracked)]  # the CLI's list shows it

    second = await send(tracked.smtp, SENDER, [GONE, "bob@mx.e2e.test"], make_message(SENDER, [GONE], "second try"))
    code, text = second.rcpts[0]
    assert code == 550 and text.decode().startswith("5.1.1 <gone@other.e2e.test>: Recipient address is suppressed")
    assert b"invalid_recipient" in text

    async with httpx.AsyncClient(timeout=10) as client:
        refused = await client.post(
            f"{tracked.api_url}/v1/messages",  # type: ignore[attr-defined]
            headers={"Authorization": f"Bearer {api_key}"},
            json={"from": {"address": SENDER}, "to": [{"address": GONE}], "subject": "api try", "text": "hi"},
        )
    assert refused.status_code == 422, refused.text
    assert "5.1.1" in refused.text and "suppressed" in refused.text

    shown = await asyncio.to_thread(suppression, tracked, "show", GONE)
    assert shown.returncode == 0 and "invalid_recipient" in shown.stdout, shown.stderr
    removed = await asyncio.to_thread(suppression, tracked, "remove", GONE)
    assert removed.returncode == 0, removed.stderr
    assert GONE not in [entry["address"] for entry in await listed(tracked)]
    third = await send(tracked.smtp, SENDER, [GONE], make_message(SENDER, [GONE], "third try"))
    assert third.rcpts[0][0] == 250  # the operator's removal holds at once (cache off here)

    added = await asyncio.to_thread(suppression, tracked, "add", "Complainer@Other.e2e.test", "--reason", "asked us")
    assert added.returncode == 0, added.stderr
    fourth = await send(tracked.smtp, SENDER, ["complainer@other.e2e.test"], make_message(SENDER, [GONE], "fourth try"))
    code, text = fourth.rcpts[0]
    assert code == 550 and text.decode().startswith("5.7.1") and b"by the operator (asked us)" in text
