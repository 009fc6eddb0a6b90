"""End to end, on the real broker with the services as processes: a job delivered to every recipient (no success
DSN owed) ends at the delivery worker. Its DeliveryResult never reaches `results` (proved with the queue-manager
stopped, so whatever is published there stays to be counted) while the tracker shows the message delivered and
done from the worker's `delivered` event; a worker SIGKILLed after the remote server's reply and before its ack
does not send the message again, and the job's fate is recorded once."""

import asyncio
from pathlib import Path
from typing import Any

import pytest

from kubemta.v1 import message_pb2
from tests.e2e.conftest import MailWorld, make_message, send
from tests.e2e.test_tracking_e2e import ADMIN_TOKEN, READ_TOKEN, Tracked, kinds
from tests.harness.ports import free_port
from tests.harness.queues import take_all
from tests.harness.rabbitmq import Vhost
from tests.harness.stack import Stack
from tests.harness.tcp_proxy import TcpProxy

pytestmark = [pytest.mark.broker, pytest.mark.e2e]

SENDER = "alice@sender.e2e.test"
WAIT = 30.0


async def eventually(check: Any, what: str, within: float = WAIT) -> Any:
    """Poll `check()` (sync or async) until it returns something truthy; fail after `within` seconds."""
    last: Any = None
    try:
        async with asyncio.timeout(within):
            while True:
                last = check()
                if asyncio.iscoroutine(last):
                    last = await last
                if last:
                    return last
                await asyncio.sleep(0.1)
    except TimeoutError:
        pytest.fail(f"timed out after {within:.0f}s waiting for {what}; last: {last!r}")


def configure(stack: Stack, world: MailWorld, **extra: str) -> Tracked:
    """The environment of the services and the tracker on this test's vhost; nothing started yet."""
    smtp_port, tracker_port = free_port(), free_port()
    tracker_url = f"http://127.0.0.1:{tracker_port}"
    stack.env.update(world.env(smtp_listen=f"127.0.0.1:{smtp_port}", **extra))
    stack.env.update(
        {
            "KUBEMTA_TRACKER_LISTEN": f"127.0.0.1:{tracker_port}",
            "KUBEMTA_TRACKER_URL": tracker_url,
            "KUBEMTA_TRACKER_TOKEN": READ_TOKEN.split(":", 1)[1],
            "KUBEMTA_TRACKER_READ_TOKENS": READ_TOKEN,
            "KUBEMTA_TRACKER_ADMIN_TOKENS": ADMIN_TOKEN,
            "KUBEMTA_INDEX_PATH": str(world.workdir / "tracker-index.sqlite3"),
        }
    )
    return Tracked(stack, f"127.0.0.1:{smtp_port}", tracker_url)


async def queued_as(tracked: Tracked, rcpt: str, subject: str) -> str:
    outcome = await send(tracked.smtp, SENDER, [rcpt], make_message(SENDER, [rcpt], subject))
    assert outcome.data is not None and outcome.data[0] == 250, outcome
    return outcome.data[1].decode().rsplit(" ", 1)[-1]


async def delivered_and_done(tracked: Tracked, queue_id: str) -> dict[str, Any]:
    shown: dict[str, Any] = await tracked.until(
        "the message done", "show", queue_id, check=lambda answer: answer.get("state") == "done"
    )
    [job] = shown["jobs"]
    assert job["state"] == "delivered"
    return shown


async def test_a_delivered_job_never_reaches_results_and_the_tracker_shows_it_delivered(
    stack: Stack, world: MailWorld, vhost: Vhost
) -> None:
    mx1 = world.peer("mx1", rules={"busy": "451 4.3.0 Try again later"})
    await mx1.start()
    tracked = configure(stack, world)
    await stack.start(("tracker", "ingress", "queue-manager", "dns-resolver"))  # no worker yet: jobs wait in deliver
    delivered_id = await queued_as(tracked, "bob@mx.e2e.test", "delivered")
    deferred_id = await queued_as(tracked, "busy@mx.e2e.test", "deferred")  # shows the probe sees a result
    await eventually(lambda: vhost.queue_depths().get("deliver") == 2, "both jobs routed to deliver")
    await stack.stop("queue-manager")  # from now on, whatever reaches `results` stays there

    await stack.start(("delivery-worker",))
    [message] = await mx1.wait_for_messages(1, timeout=WAIT)
    assert message.rcpt_tos == ["bob@mx.e2e.test"]
    await eventually(lambda: vhost.queue_depths().get("deliver") == 0, "both jobs acknowledged by the worker")

    depths = vhost.queue_depths()
    assert (depths.get("results"), depths.get("results.large")) == (1, 0), depths
    [only] = [message_pb2.DeliveryResult.FromString(body) for body in await take_all(vhost.url, "results")]
    assert only.job.queue_id == deferred_id, "the one result is the deferred job's; the delivered one ended"
    assert await stack.metric("delivery-worker", "kubemta_recipients_delivered_total", provider="other") == 1
    assert await stack.metric("delivery-worker", "kubemta_queue_time_seconds_count") == 1

    shown = await delivered_and_done(tracked, delivered_id)
    services = {entry["kind"]: entry["service"] for entry in shown["timeline"]}
    assert services["delivered"] == services["attempted"] == "delivery-worker"
    assert kinds(shown["timeline"]).count("delivered") == 1
    # the worker logged the queue-manager's line for the delivered recipient, under the message's queue id
    assert any(
        entry.get("queue_id") == delivered_id and "to=<bob@mx.e2e.test>" in str(entry.get("message", ""))
        for entry in stack.log_events("delivery-worker")
    )


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


async def test_a_worker_killed_after_the_delivery_before_its_ack_does_not_send_again(
    stack: Stack, world: MailWorld, vhost: Vhost
) -> None:
    """The worker talks to the broker through a proxy. The moment the peer has the message and before it answers
    the final dot, the proxy starts holding everything the broker sends the worker: the worker reads the 250,
    writes its journal line and publishes its events, but no confirm reaches it, so it cannot acknowledge the job.
    It is SIGKILLed after its journal line: the broker hands the job back, the restarted worker finds the delivery
    in the journal (same disk, as the chart's emptyDir), sends nothing, and records the `delivered` fate unless the
    tracker shows it recorded by the killed one (whose publish did reach the broker): exactly one either way.

    The window not covered (documented in kubemta_delivery_worker/finished.py): a kill after the peer took the
    message but before the worker read its reply sends it again (at least once)."""
    journal = world.workdir / "delivered.journal"
    proxy = TcpProxy("127.0.0.1", vhost.node.host, vhost.node.port)
    await proxy.start()
    mx1 = world.peer("mx1")
    mx1.before_data_reply = proxy.hold_replies
    await mx1.start()
    tracked = configure(stack, world, delivery_journal=str(journal), events_confirm_timeout="30s")
    through_proxy = {  # and long enough waits that no timeout ends the job while its confirms are held
        "KUBEMTA_AMQP_URL": f"amqp://guest:guest@127.0.0.1:{proxy.port}/{vhost.name}",
        "KUBEMTA_PUBLISH_TIMEOUT": "30s",
    }
    try:
        await stack.start(
            ("tracker", "ingress", "queue-manager", "dns-resolver", "delivery-worker"),
            extra_env={"delivery-worker": through_proxy},
        )
        journaled = _size(journal)
        queue_id = await queued_as(tracked, "crash@mx.e2e.test", "crash")
        await eventually(lambda: _size(journal) > journaled, "the worker's journal line")
        # the broker's queue statistics lag (up to its 5 s collection interval): poll, the job cannot be acked
        await eventually(lambda: vhost.queue_depths().get("deliver") == 1, "the unacknowledged job", within=15)
        await stack.kill("delivery-worker")
        mx1.before_data_reply = None
        await proxy.restore()
        await stack.restart("delivery-worker")
        await eventually(lambda: vhost.queue_depths().get("deliver") == 0, "the job acknowledged by the new worker")
        shown = await delivered_and_done(tracked, queue_id)
        assert [m.rcpt_tos for m in mx1.messages] == [["crash@mx.e2e.test"]], "sent once"
        assert kinds(shown["timeline"]).count("delivered") == 1
        assert {e["service"] for e in shown["timeline"] if e["kind"] == "delivered"} == {"delivery-worker"}
        assert await stack.metric("delivery-worker", "kubemta_duplicates_total", stage="delivery-worker") == 1
        depths = vhost.queue_depths()
        assert (depths.get("results"), depths.get("held")) == (0, 0), depths
    finally:
        await proxy.stop()
