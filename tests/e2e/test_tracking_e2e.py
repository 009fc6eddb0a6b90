"""End to end, "where is my mail": the five services as processes (the four of the pipeline and the
tracker) on the real broker, mail over smtplib to real SMTP peers found through the real DNS server,
and `kubemta-admin queue` run as a command against the tracker — the timeline of a message across
every service, an operator's hold, release, flush and delete, and mail that keeps flowing while the
`events` stream is gone."""

import asyncio
import email
import email.policy
import json
import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import MailWorld, make_message, send
from tests.harness.ports import free_port
from tests.harness.rabbitmq import Vhost
from tests.harness.stack import SERVICES, Stack

pytestmark = [pytest.mark.broker, pytest.mark.e2e]

SENDER = "alice@sender.e2e.test"
READ_TOKEN = "svc:" + secrets.token_hex(16)
ADMIN_TOKEN = "ops:" + secrets.token_hex(16)
ADMIN = Path(sys.executable).parent / "kubemta-admin"
WAIT = 30.0


class Tracked:
    """The running stack and the command line an operator uses against its tracker."""

    def __init__(self, stack: Stack, smtp: str, tracker_url: str) -> None:
        self.stack = stack
        self.smtp = smtp
        self.tracker_url = tracker_url

    def admin(self, *args: str, token: str = ADMIN_TOKEN, command: str = "queue") -> subprocess.CompletedProcess[str]:
        """`kubemta-admin <command> ...` (queue, suppression) as a process, as an operator runs it."""
        env = {key: value for key, value in os.environ.items() if not key.startswith("KUBEMTA_")}
        env.update(KUBEMTA_TRACKER_URL=self.tracker_url, KUBEMTA_ADMIN_TOKEN=token.split(":", 1)[1])
        return subprocess.run(
            [str(ADMIN), command, *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
            check=False,
        )

    async def json(self, *args: str, nothing_found: bool = False) -> Any:
        """The JSON answer of `kubemta-admin queue <args> --json`; with `nothing_found`, also its answer when it
        found nothing (exit 1, like grep), which a poll for what is not indexed yet gets."""
        done = await asyncio.to_thread(self.admin, *args, "--json")
        assert done.returncode == 0 or (nothing_found and done.returncode == 1 and done.stdout), done.stderr
        return json.loads(done.stdout)

    async def until(self, what: str, *args: str, check: Any) -> Any:
        """Run `kubemta-admin queue <args> --json` until `check(answer)` holds (bounded)."""
        answer: Any = None
        try:
            async with asyncio.timeout(WAIT):
                while True:
                    answer = await self.json(*args, nothing_found=True)
                    if check(answer):
                        return answer
                    await asyncio.sleep(0.3)
        except TimeoutError:
            pytest.fail(f"timed out waiting for {what}; last answer: {answer}")

    async def queue_id_of(self, message_id: str) -> str:
        found = await self.until(
            f"the tracker to find {message_id}", "find", "--message-id", message_id, check=lambda a: a["messages"]
        )
        return str(found["messages"][0]["queue_id"])


async def start_tracked(stack: Stack, world: MailWorld, retry_schedule: str | None = None) -> Tracked:
    """The five services on this test's vhost (with `retry_schedule` instead of the tests' 1s when given)."""
    smtp_port, tracker_port = free_port(), free_port()
    tracker_url = f"http://127.0.0.1:{tracker_port}"
    stack.env.update(world.env(smtp_listen=f"127.0.0.1:{smtp_port}"))
    stack.env.update(
        {
            "KUBEMTA_TRACKER_LISTEN": f"127.0.0.1:{tracker_port}",
            "KUBEMTA_TRACKER_URL": tracker_url,
            "KUBEMTA_TRACKER_TOKEN": READ_TOKEN.split(":", 1)[1],
            "KUBEMTA_TRACKER_READ_TOKENS": READ_TOKEN,
            "KUBEMTA_TRACKER_ADMIN_TOKENS": ADMIN_TOKEN,
            "KUBEMTA_INDEX_PATH": str(world.workdir / "tracker-index.sqlite3"),
            "KUBEMTA_EVENTS_CONFIRM_TIMEOUT": "0.5s",
        }
    )
    if retry_schedule is not None:
        stack.env["KUBEMTA_RETRY_SCHEDULE"] = retry_schedule
    await stack.start(("tracker", *SERVICES))
    return Tracked(stack, f"127.0.0.1:{smtp_port}", tracker_url)


@pytest.fixture
async def tracked(stack: Stack, world: MailWorld) -> Tracked:
    """The five services, retrying after 1s."""
    return await start_tracked(stack, world)


@pytest.fixture
async def tracked_slowly(stack: Stack, world: MailWorld) -> Tracked:
    """The five services, retrying only after an hour: deferred mail stays in retry.1h for an operator."""
    return await start_tracked(stack, world, "1h")


def kinds(timeline: list[dict[str, Any]]) -> list[str]:
    return [entry["kind"] for entry in timeline]


async def test_a_message_timeline_spans_every_service(tracked: Tracked, world: MailWorld) -> None:
    mx1 = world.peer("mx1")
    await mx1.start()
    message = make_message(SENDER, ["bob@mx.e2e.test"], "invoice 1002")
    outcome = await send(tracked.smtp, SENDER, ["bob@mx.e2e.test"], message)
    assert outcome.data is not None and outcome.data[0] == 250
    queued_as = outcome.data[1].decode().rsplit(" ", 1)[-1]
    await mx1.wait_for_messages(1, timeout=WAIT)

    queue_id = await tracked.queue_id_of("<invoice-1002@e2e.test>")
    assert queue_id == queued_as  # the id the client was told is the one an operator finds
    shown = await tracked.until(
        "the delivered event",
        "show",
        queue_id,
        check=lambda answer: "delivered" in kinds(answer["timeline"]),
    )
    assert (shown["sender"], shown["recipients"], shown["message_id"]) == (
        SENDER,
        ["bob@mx.e2e.test"],
        "<invoice-1002@e2e.test>",
    )
    assert "Subject: invoice 1002" in shown["headers"]
    timeline = shown["timeline"]
    assert kinds(timeline)[:1] == ["received"]
    assert {"received", "queued", "routed", "attempted", "delivered"} <= set(kinds(timeline))
    services = {entry["kind"]: entry["service"] for entry in timeline}
    assert services["received"] == "ingress"
    assert services["queued"] == "queue-manager"
    assert services["routed"] == "dns-resolver"
    assert services["attempted"] == services["delivered"] == "delivery-worker"  # delivered everywhere: ends there
    assert [entry["time"] for entry in timeline] == sorted(entry["time"] for entry in timeline)
    (job,) = shown["jobs"]
    assert (job["domain"], job["state"]) == ("mx.e2e.test", "delivered")

    for key, value in (("--sender", SENDER), ("--recipient", "bob@mx.e2e.test"), ("--queue-id", queue_id)):
        found = await tracked.json("find", key, value)
        assert [entry["queue_id"] for entry in found["messages"]] == [queue_id], key
    human = await asyncio.to_thread(tracked.admin, "show", queue_id)
    assert human.returncode == 0, human.stderr
    assert queue_id in human.stdout and "delivered" in human.stdout

    refused = await asyncio.to_thread(tracked.admin, "show", queue_id, token="nobody:" + "x" * 32)
    assert refused.returncode == 4  # auth refused: a wrong token sees nothing
    assert queue_id not in refused.stdout


async def test_an_operator_holds_and_releases_deferred_mail(tracked_slowly: Tracked, world: MailWorld) -> None:
    tracked = tracked_slowly
    mx3 = world.peer("mx3", rules={"carol": "451 4.3.0 mailbox busy, try later"})
    await mx3.start()
    message = make_message(SENDER, ["carol@other.e2e.test"], "held report")
    outcome = await send(tracked.smtp, SENDER, ["carol@other.e2e.test"], message)
    assert outcome.data is not None and outcome.data[0] == 250
    queue_id = await tracked.queue_id_of("<held-report@e2e.test>")
    await tracked.until(
        "the job waiting in retry.1h",
        "summary",
        check=lambda answer: answer["retry"].get("retry.1h", {}).get("jobs") == 1,
    )

    held = await tracked.json("hold", "--domain", "other.e2e.test")
    assert held["held"] == 1  # moved from retry.1h to held right away, as postsuper -h does
    listed = await tracked.until("the held list", "held", check=lambda answer: answer["held"])
    assert [entry["queue_id"] for entry in listed["held"]] == [queue_id]

    await mx3.stop()
    mx3 = world.peer("mx3")  # the mailbox is free again
    await mx3.start()
    released = await tracked.json("release", "--queue-id", queue_id)
    assert released["released"] == 1
    (delivered,) = await mx3.wait_for_messages(1, timeout=WAIT)
    assert delivered.rcpt_tos == ["carol@other.e2e.test"]

    shown = await tracked.until(
        "the delivered event after the release",
        "show",
        queue_id,
        check=lambda answer: "delivered" in kinds(answer["timeline"]),
    )
    order = kinds(shown["timeline"])
    assert order.index("deferred") < order.index("held") < order.index("released") < order.index("delivered")
    last_routed = len(order) - 1 - order[::-1].index("routed")
    assert order.index("released") < last_routed < order.index("delivered")  # routed again after the release
    (held_entry,) = [entry for entry in shown["timeline"] if entry["kind"] == "held"]
    assert (held_entry["details"]["reason"], held_entry["details"]["actor"]) == ("admin", "ops")  # who held it
    actions = [entry["details"] for entry in shown["timeline"] if entry["kind"] == "admin_action"]
    assert ("release", "ops") in {(action["verb"], action["actor"]) for action in actions}  # the command naming it


async def test_a_deleted_message_is_not_delivered_and_bounces_only_when_asked(
    tracked_slowly: Tracked, world: MailWorld
) -> None:
    tracked = tracked_slowly
    mx3 = world.peer("mx3", rules={"dave": "451 4.3.0 try later", "erin": "451 4.3.0 try later"})
    bounces = world.peer("bounce-mx")
    await mx3.start()
    await bounces.start()
    for subject, rcpt in (("quiet delete", "dave@other.e2e.test"), ("loud delete", "erin@other.e2e.test")):
        outcome = await send(tracked.smtp, SENDER, [rcpt], make_message(SENDER, [rcpt], subject))
        assert outcome.data is not None and outcome.data[0] == 250
    quiet = await tracked.queue_id_of("<quiet-delete@e2e.test>")
    loud = await tracked.queue_id_of("<loud-delete@e2e.test>")
    await tracked.until(
        "both jobs in retry.1h",
        "summary",
        check=lambda answer: answer["retry"].get("retry.1h", {}).get("jobs") == 2,
    )
    await tracked.json("delete", "--queue-id", quiet)
    await tracked.json("delete", "--queue-id", loud, "--dsn")
    await mx3.stop()
    mx3 = world.peer("mx3")  # would accept now: a deleted message must still not arrive
    await mx3.start()
    flushed = await tracked.json("flush")
    assert flushed["flushed"] == 2  # back to route at once; the resolver honours the deletions

    (bounce,) = await bounces.wait_for_messages(1, timeout=WAIT)
    report = email.message_from_bytes(bounce.content, policy=email.policy.default)
    assert report.get_content_type() == "multipart/report"
    assert "erin@other.e2e.test" in bounce.content.decode()
    assert "5.3.0" in bounce.content.decode() and "deleted by the administrator" in bounce.content.decode()
    for queue_id in (quiet, loud):
        await tracked.until(
            f"the deleted event of {queue_id}",
            "show",
            queue_id,
            check=lambda answer: "deleted" in kinds(answer["timeline"]),
        )
    await asyncio.sleep(1.0)  # nothing more is on its way to the mailbox
    assert mx3.messages == []
    assert len(bounces.messages) == 1  # the quiet deletion sent no DSN


async def test_mail_flows_while_the_events_stream_is_gone(tracked: Tracked, world: MailWorld, vhost: Vhost) -> None:
    """The stream is a record, not a step: without it mail is still accepted and delivered (record() gives up
    after KUBEMTA_EVENTS_CONFIRM_TIMEOUT, then not at all while it keeps failing), and the events wait in memory
    until the stream is back."""
    mx1 = world.peer("mx1")
    await mx1.start()
    vhost.node.ctl("delete_queue", "-p", vhost.name, "events")
    for number in range(3):
        subject = f"outage {number}"
        outcome = await send(
            tracked.smtp, SENDER, ["bob@mx.e2e.test"], make_message(SENDER, ["bob@mx.e2e.test"], subject)
        )
        assert outcome.data is not None and outcome.data[0] == 250
    await mx1.wait_for_messages(3, timeout=WAIT)
    assert await tracked.stack.metric("ingress", "kubemta_events_buffered") > 0
    assert await tracked.stack.metric("ingress", "kubemta_events_dropped_total") == 0

    await tracked.stack.stop("tracker")
    await tracked.stack.restart("tracker")  # its broker connection declares the stream again
    queue_id = await tracked.queue_id_of("<outage-0@e2e.test>")
    shown = await tracked.until(
        "the events kept during the outage",
        "show",
        queue_id,
        check=lambda answer: {"received", "delivered"} <= set(kinds(answer["timeline"])),
    )
    assert {"received", "queued", "routed", "attempted", "delivered"} <= set(kinds(shown["timeline"]))
