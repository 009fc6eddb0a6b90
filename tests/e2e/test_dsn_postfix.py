"""End to end: kubemta's DSN extension against Postfix in both directions (issue 16).

One pipeline run per module: the four services as processes, a real name server, and a private Postfix
(tests/harness/postfix_peer.py) as the MX of other.e2e.test (mx3), whose relay host is kubemta's ingress.

- Postfix as next hop: a client gives kubemta NOTIFY, ORCPT, ENVID and RET; kubemta must pass them on
  to Postfix, which offers DSN (RFC 3461 §5.2.1), xtext-encoded again (an ENVID and an ORCPT holding "+"
  and "=" must reach Postfix as they were meant). What Postfix received shows in what it does with them:
  it writes a "delivered" DSN only for NOTIFY=SUCCESS, its reports carry the ORCPT and ENVID it was given,
  its bounce returns the whole message for RET=FULL and the headers for RET=HDRS, and for NOTIFY=NEVER it
  bounces without a word (its log says so). Its DSNs come back through kubemta to the senders' MX
  (bounce-mx). kubemta itself says nothing: a next hop that offers DSN takes over the notification.
- Postfix as client: Postfix's sendmail(1) submits with `-N -R -V`, Postfix's smtp client gives kubemta
  the parameters, kubemta relays to mx1 (an aiosmtpd peer without DSN) and its DSNs go back to the
  sender's mailbox in Postfix, where they are read with the email package and flufl.bounce.
"""

import asyncio
import email
import email.policy
from dataclasses import dataclass
from email.message import EmailMessage, Message
from pathlib import Path
from typing import cast

import pytest
from flufl.bounce import all_failures

from tests.e2e.conftest import MailWorld
from tests.e2e.test_dsn_notify_ret import Case, SmtpReplies, compose, send_with_dsn, wait_until
from tests.harness.dns_server import DnsServer
from tests.harness.ports import free_port
from tests.harness.postfix_peer import PostfixPeer
from tests.harness.rabbitmq import BrokerNode
from tests.harness.smtp_peer import ReceivedMessage
from tests.harness.stack import Stack

pytestmark = [pytest.mark.broker, pytest.mark.e2e]

POSTFIX_DOMAIN = "other.e2e.test"  # MX 10 mx3 in tests/e2e/conftest.py's zone: Postfix listens there
POSTFIX_HOST = f"postfix.{POSTFIX_DOMAIN}"
KUBEMTA_HOST = "mta.kubemta.test"
ARRIVAL_TIMEOUT = 45.0
SETTLE_SECONDS = 3.0  # three DSN batch windows (1 s in the world's environment)
BODY_LINE = "This body line travels back only with RET=FULL."  # as compose() writes it

HOP_CASES = {
    "hop_success": Case(
        "hop-success",
        f"dave@{POSTFIX_DOMAIN}",
        ("RET=FULL", "ENVID=hop+2Bsuccess+3Denvid-4"),
        ("NOTIFY=SUCCESS", "ORCPT=rfc822;Dave+2BOriginal+3Dx@example.org"),
    ),
    "hop_full": Case(
        "hop-full",
        f"gone@{POSTFIX_DOMAIN}",
        ("RET=FULL", "ENVID=hop-full.envid-5"),
        ("NOTIFY=FAILURE", "ORCPT=rfc822;Gone.Original@example.org"),
    ),
    "hop_hdrs": Case("hop-hdrs", f"gone@{POSTFIX_DOMAIN}", ("RET=HDRS", "ENVID=hop-hdrs.envid-6"), ("NOTIFY=FAILURE",)),
    "hop_never": Case("hop-never", f"gone@{POSTFIX_DOMAIN}", (), ("NOTIFY=NEVER",)),
}
POSTFIX_DSNS = ("hop_success", "hop_full", "hop_hdrs")


@dataclass(frozen=True)
class Submission:
    """A message Postfix's sendmail submits: from `sender_local`@other.e2e.test, whose mailbox gets the DSN."""

    sender_local: str
    recipient: str
    notify: str
    ret: str
    envid: str

    @property
    def sender(self) -> str:
        return f"{self.sender_local}@{POSTFIX_DOMAIN}"


SUBMISSIONS = {
    "client_success": Submission("carol", "bob@mx.e2e.test", "success", "hdrs", "client-success.envid-7"),
    "client_failure": Submission("erin", "nobody@mx.e2e.test", "failure", "full", "client-failure.envid-8"),
}


@dataclass(frozen=True)
class PostfixRun:
    replies: dict[str, SmtpReplies]
    """What kubemta answered to each next-hop case."""
    submitted: dict[str, str]
    """Each sendmail submission's error ("" when Postfix took it)."""
    returned: dict[str, list[ReceivedMessage]]
    """What the senders' MX received for each next-hop case's sender."""
    mailboxes: dict[str, list[EmailMessage]]
    """Postfix's Maildirs by local part."""
    delivered: list[ReceivedMessage]
    """What mx1 accepted."""
    never_log: list[str]
    """Postfix's log lines about the NOTIFY=NEVER message."""


def reporting_mta(message: Message) -> str:
    """The Reporting-MTA of a DSN (the email package's reading), "" when it is none."""
    for part in message.walk():
        if part.get_content_type() == "message/delivery-status":
            blocks = cast(list[Message], part.get_payload())
            return str(blocks[0].get("Reporting-MTA", ""))
    return ""


def as_message(received: ReceivedMessage) -> EmailMessage:
    return email.message_from_bytes(received.content, policy=email.policy.default)


async def _submit(postfix: PostfixPeer, submission: Submission) -> str:
    message = compose(submission.sender, submission.recipient, f"postfix client {submission.notify}")
    try:
        await asyncio.to_thread(
            postfix.sendmail,
            submission.sender,
            submission.recipient,
            message,
            notify=submission.notify,
            ret=submission.ret,
            envid=submission.envid,
        )
    except (RuntimeError, OSError) as exc:
        return str(exc)
    return ""


async def _run(broker_node: BrokerNode, net: str, dns: DnsServer, workdir: Path) -> PostfixRun:
    vhost = broker_node.create_vhost()
    stack = Stack(workdir, {"KUBEMTA_AMQP_URL": vhost.url})
    world = MailWorld(net, dns, free_port(), workdir)
    mx1 = world.peer("mx1", rules={"nobody": "550 5.1.1 <nobody@mx.e2e.test>: Recipient address rejected"})
    bounce_mx = world.peer("bounce-mx")
    server = f"127.0.0.1:{free_port()}"
    postfix = PostfixPeer(
        workdir,
        address=world.address("mx3"),
        port=world.delivery_port,
        hostname=POSTFIX_HOST,
        mailbox_domain=POSTFIX_DOMAIN,
        mailboxes=("dave", *(submission.sender_local for submission in SUBMISSIONS.values())),
        bouncing=("gone",),
        relayhost=server,
    )
    try:
        await mx1.start()
        await bounce_mx.start()
        await postfix.start()
        stack.env.update(world.env(smtp_listen=server))
        await stack.start()
        replies = {name: await send_with_dsn(server, case, f"postfix hop {name}") for name, case in HOP_CASES.items()}
        submitted = {name: await _submit(postfix, submission) for name, submission in SUBMISSIONS.items()}

        def returned() -> dict[str, list[ReceivedMessage]]:
            return {
                name: [message for message in bounce_mx.messages if message.rcpt_tos == [case.sender]]
                for name, case in HOP_CASES.items()
            }

        def kubemta_dsn_in(local: str) -> bool:
            return any(reporting_mta(message) == f"dns; {KUBEMTA_HOST}" for message in postfix.mailbox(local))

        def never_done() -> bool:
            return any(
                line.endswith(": removed")
                for queue_id in postfix.queue_ids_from(HOP_CASES["hop_never"].sender)
                for line in postfix.queue_log(queue_id)
            )

        await wait_until(
            lambda: (
                all(returned()[name] for name in POSTFIX_DSNS if replies[name].queued)
                and all(kubemta_dsn_in(s.sender_local) for name, s in SUBMISSIONS.items() if not submitted[name])
                and bool(postfix.mailbox("dave"))
                and never_done()
            ),
            within=ARRIVAL_TIMEOUT,
        )
        await asyncio.sleep(SETTLE_SECONDS)
        never_log = [
            line
            for queue_id in postfix.queue_ids_from(HOP_CASES["hop_never"].sender)
            for line in postfix.queue_log(queue_id)
        ]
        mailboxes = {local: postfix.mailbox(local) for local in postfix.mailboxes}
        return PostfixRun(replies, submitted, returned(), mailboxes, list(mx1.messages), never_log)
    finally:
        try:
            await stack.stop()
        finally:
            postfix.stop()
            for peer in world.peers:
                await peer.stop()
            vhost.delete()


@pytest.fixture(scope="module")
def postfix_run(
    broker_node: BrokerNode, loopback_net: str, dns_server: DnsServer, tmp_path_factory: pytest.TempPathFactory
) -> PostfixRun:
    workdir = tmp_path_factory.mktemp("dsn-postfix")
    return asyncio.run(_run(broker_node, loopback_net, dns_server, workdir))


def status_blocks(message: Message) -> list[Message]:
    """The message/delivery-status blocks of a DSN as the email package reads them (per-message block first)."""
    [status] = [part for part in message.walk() if part.get_content_type() == "message/delivery-status"]
    return cast(list[Message], status.get_payload())


def returned_part(message: Message) -> Message:
    """The third part of a multipart/report: the returned message or its headers."""
    parts = cast(list[Message], message.get_payload())
    assert len(parts) == 3, [part.get_content_type() for part in parts]
    return parts[2]


def orcpt(value: object) -> tuple[str, str]:
    address_type, _, address = str(value).partition(";")
    return address_type.strip().lower(), address.strip()


def postfix_dsn(run: PostfixRun, name: str) -> EmailMessage:
    """Postfix's one DSN for a next-hop case, as the senders' MX received it through kubemta."""
    assert run.replies[name].queued, f"kubemta did not queue the {name} message: {run.replies[name]}"
    messages = [as_message(message) for message in run.returned[name]]
    from_postfix = [message for message in messages if reporting_mta(message) == f"dns; {POSTFIX_HOST}"]
    assert len(from_postfix) == 1, [reporting_mta(message) for message in messages]
    return from_postfix[0]


# --- Postfix as next hop ------------------------------------------------------------------------------


def test_postfix_receives_notify_success_orcpt_and_envid(postfix_run: PostfixRun) -> None:
    dsn = postfix_dsn(postfix_run, "hop_success")  # Postfix writes a success DSN only for NOTIFY=SUCCESS
    per_message, recipient = status_blocks(dsn)
    assert per_message["Original-Envelope-Id"] == "hop+success=envid-4"  # kubemta re-encoded the xtext
    assert recipient["Action"] == "delivered"
    assert orcpt(recipient["Original-Recipient"]) == ("rfc822", "Dave+Original=x@example.org")
    [delivered] = postfix_run.mailboxes["dave"]
    assert delivered["Subject"] == "postfix hop hop_success"


def test_kubemta_sends_no_dsn_of_its_own_when_the_next_hop_offers_dsn(postfix_run: PostfixRun) -> None:
    postfix_dsn(postfix_run, "hop_success")  # the pipeline ran: Postfix's DSN came back
    reporters = [reporting_mta(as_message(message)) for message in postfix_run.returned["hop_success"]]
    assert reporters == [f"dns; {POSTFIX_HOST}"]


def test_postfix_receives_ret_full(postfix_run: PostfixRun) -> None:
    dsn = postfix_dsn(postfix_run, "hop_full")
    per_message, recipient = status_blocks(dsn)
    assert per_message["Original-Envelope-Id"] == "hop-full.envid-5"
    assert recipient["Action"] == "failed"
    assert orcpt(recipient["Original-Recipient"]) == ("rfc822", "Gone.Original@example.org")
    returned = returned_part(dsn)
    assert returned.get_content_type() == "message/rfc822"
    assert BODY_LINE in returned.as_string()
    compat = email.message_from_bytes(dsn.as_bytes(), policy=email.policy.compat32)
    assert {address.lower() for address in all_failures(compat)[1]} == {b"gone.original@example.org"}


def test_postfix_receives_ret_hdrs(postfix_run: PostfixRun) -> None:
    dsn = postfix_dsn(postfix_run, "hop_hdrs")
    per_message, recipient = status_blocks(dsn)
    assert per_message["Original-Envelope-Id"] == "hop-hdrs.envid-6"
    assert recipient["Action"] == "failed"
    returned = returned_part(dsn)
    assert returned.get_content_type() == "text/rfc822-headers"
    assert "postfix hop hop_hdrs" in returned.as_string()
    assert BODY_LINE not in returned.as_string()


def test_postfix_receives_notify_never(postfix_run: PostfixRun) -> None:
    assert postfix_run.replies["hop_never"].queued, postfix_run.replies["hop_never"]
    assert any("status=bounced" in line for line in postfix_run.never_log), postfix_run.never_log
    assert not any("notification" in line for line in postfix_run.never_log), postfix_run.never_log
    assert postfix_run.returned["hop_never"] == []


# --- Postfix as client ---------------------------------------------------------------------------------


def kubemta_dsn_in_mailbox(run: PostfixRun, name: str) -> EmailMessage:
    """kubemta's one DSN in the submitting sender's Postfix mailbox."""
    assert run.submitted[name] == "", run.submitted[name]
    messages = run.mailboxes[SUBMISSIONS[name].sender_local]
    ours = [message for message in messages if reporting_mta(message) == f"dns; {KUBEMTA_HOST}"]
    assert len(ours) == 1, [reporting_mta(message) for message in messages]
    assert len(messages) == 1, "Postfix wrote a DSN of its own: kubemta did not take the parameters over"
    return ours[0]


def test_postfix_client_asking_success_gets_a_relayed_dsn_from_kubemta(postfix_run: PostfixRun) -> None:
    dsn = kubemta_dsn_in_mailbox(postfix_run, "client_success")
    per_message, recipient = status_blocks(dsn)
    assert per_message["Original-Envelope-Id"] == "client-success.envid-7"
    assert recipient["Action"] == "relayed"
    assert orcpt(recipient["Original-Recipient"]) == ("rfc822", "bob@mx.e2e.test")  # Postfix's ORCPT
    returned = returned_part(dsn)
    assert returned.get_content_type() == "text/rfc822-headers"  # -R hdrs
    assert "Subject: postfix client success" in returned.as_string()
    assert BODY_LINE not in returned.as_string()
    compat = email.message_from_bytes(dsn.as_bytes(), policy=email.policy.compat32)
    assert all_failures(compat) == (frozenset(), frozenset())
    assert [message.rcpt_tos for message in postfix_run.delivered] == [["bob@mx.e2e.test"]]


def test_postfix_client_asking_failure_gets_a_failed_dsn_from_kubemta(postfix_run: PostfixRun) -> None:
    dsn = kubemta_dsn_in_mailbox(postfix_run, "client_failure")
    per_message, recipient = status_blocks(dsn)
    assert per_message["Original-Envelope-Id"] == "client-failure.envid-8"
    assert recipient["Action"] == "failed"
    assert str(recipient["Status"]).startswith("5.1.1")
    returned = returned_part(dsn)
    assert returned.get_content_type() == "message/rfc822"  # -R full
    assert BODY_LINE in returned.as_string()
    compat = email.message_from_bytes(dsn.as_bytes(), policy=email.policy.compat32)
    assert all_failures(compat)[1] == {b"nobody@mx.e2e.test"}
