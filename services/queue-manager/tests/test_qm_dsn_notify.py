"""RFC 3461 §4.1 NOTIFY honoured by the results handler: who gets a failure DSN, a delay warning or a success DSN,
for every NOTIFY combination and outcome, read back with the strict DSN reader."""

from datetime import timedelta

import pytest

from kubemta.v1 import message_pb2
from kubemta_common.dsn_parameters import parse_recipient_dsn
from kubemta_common.timestamps import to_datetime
from kubemta_queue_manager.dsn_batcher import group_key
from kubemta_queue_manager.dsn_requests import dsn_message, merged_report
from tests.harness.dsn_reader import read_dsn

RCPT = "bob@example.org"
COMBOS = ["NEVER", "SUCCESS", "FAILURE", "DELAY", "SUCCESS,FAILURE", "FAILURE,DELAY", "SUCCESS,DELAY", None]
"""Every NOTIFY value kind (None: not given)."""


def notify_job(kit, notify: str | None, *, age: timedelta = timedelta(minutes=10), sender: str = "alice@example.com"):
    job = kit.job([RCPT], age=age, sender=sender)
    dsn = parse_recipient_dsn(notify, None)
    if dsn is not None:
        job.recipient_dsn[RCPT].CopyFrom(dsn)
    return job


def delivered(kit, handoff: "message_pb2.Handoff.ValueType") -> message_pb2.RecipientResult:
    result: message_pb2.RecipientResult = kit.delivered(RCPT)
    result.handoff = handoff
    result.remote_mta = "lmtp.example.org"
    return result


def actions(kit, publisher) -> list[str]:
    return [message_pb2.DsnAction.Name(request.action) for request in kit.dsn_requests(publisher)]


@pytest.mark.parametrize("notify", COMBOS)
async def test_a_failure_dsn_only_when_failures_are_wanted(kit, manager, publisher, notify) -> None:
    await manager.handle_result(kit.result(notify_job(kit, notify), [kit.bounced(RCPT)]))

    wanted = notify is None or "FAILURE" in notify
    assert actions(kit, publisher) == (["DSN_ACTION_FAILED"] if wanted else [])


@pytest.mark.parametrize("notify", COMBOS)
async def test_an_expiry_is_a_failure_for_notify(kit, manager, publisher, notify) -> None:
    job = notify_job(kit, notify, age=timedelta(days=6))

    await manager.handle_result(kit.result(job, [kit.deferred(RCPT)]))

    wanted = notify is None or "FAILURE" in notify
    assert actions(kit, publisher) == (["DSN_ACTION_FAILED"] if wanted else [])


@pytest.mark.parametrize("notify", COMBOS)
async def test_a_delay_warning_only_when_delays_are_wanted(kit, manager, publisher, notify) -> None:
    job = notify_job(kit, notify, age=timedelta(hours=5))

    await manager.handle_result(kit.result(job, [kit.deferred(RCPT)]))

    wanted = notify is None or "DELAY" in notify
    assert actions(kit, publisher) == (["DSN_ACTION_DELAYED"] if wanted else [])
    [(_, body, _, _)] = [item for item in publisher.published if item[0].startswith("retry")]
    retry = message_pb2.DeliveryJob.FromString(body)
    assert retry.delay_warning_sent  # due once: never again, asked for or not
    assert retry.recipient_dsn == job.recipient_dsn  # the retry keeps the parameters


@pytest.mark.parametrize("notify", COMBOS)
@pytest.mark.parametrize(
    ("handoff", "action"),
    [
        (message_pb2.HANDOFF_DELIVERED, "DSN_ACTION_DELIVERED"),
        (message_pb2.HANDOFF_RELAYED, "DSN_ACTION_RELAYED"),
        (message_pb2.HANDOFF_UNSPECIFIED, "DSN_ACTION_RELAYED"),
        (message_pb2.HANDOFF_DSN_PASSED, None),
    ],
)
async def test_a_success_dsn_only_when_asked_and_not_passed_on(kit, manager, publisher, notify, handoff, action):
    await manager.handle_result(kit.result(notify_job(kit, notify), [delivered(kit, handoff)]))

    wanted = notify is not None and "SUCCESS" in notify and action is not None
    assert actions(kit, publisher) == ([action] if wanted else [])


@pytest.mark.parametrize("sender", ["", "generated"])
async def test_never_a_success_dsn_for_the_null_sender_or_a_dsn(kit, manager, publisher, sender) -> None:
    job = notify_job(kit, "SUCCESS,FAILURE,DELAY", sender="" if sender == "" else "alice@example.com")
    job.generated = sender == "generated"

    await manager.handle_result(kit.result(job, [delivered(kit, message_pb2.HANDOFF_DELIVERED)]))

    assert kit.dsn_requests(publisher) == []


async def test_notify_is_per_recipient(kit, manager, publisher) -> None:
    rcpts = ["never@example.org", "fail@example.org", "default@example.org", "ok@example.org"]
    job = kit.job(rcpts)
    job.recipient_dsn["never@example.org"].CopyFrom(parse_recipient_dsn("NEVER", None))
    job.recipient_dsn["fail@example.org"].CopyFrom(parse_recipient_dsn("FAILURE", None))
    job.recipient_dsn["ok@example.org"].CopyFrom(parse_recipient_dsn("SUCCESS", None))
    results = [kit.bounced(rcpt) for rcpt in rcpts[:3]] + [kit.delivered("ok@example.org")]

    await manager.handle_result(kit.result(job, results))

    requests = {
        message_pb2.DsnAction.Name(r.action): [e.recipient for e in r.recipients] for r in kit.dsn_requests(publisher)
    }
    assert requests == {
        "DSN_ACTION_FAILED": ["fail@example.org", "default@example.org"],
        "DSN_ACTION_RELAYED": ["ok@example.org"],
    }


async def test_the_success_report_of_a_message_lists_delivered_and_relayed_recipients_once(kit, manager, publisher):
    job = kit.job(["a@example.org", "b@example.org"])
    for rcpt in job.recipients:
        job.recipient_dsn[rcpt].CopyFrom(parse_recipient_dsn("SUCCESS", None))
    mailbox = kit.delivered("a@example.org")
    mailbox.handoff, mailbox.remote_mta = message_pb2.HANDOFF_DELIVERED, "lmtp.example.org"
    relayed = kit.delivered("b@example.org")
    relayed.handoff, relayed.remote_mta = message_pb2.HANDOFF_RELAYED, "mx1.example.org"

    await manager.handle_result(kit.result(job, [mailbox, relayed]))

    requests = kit.dsn_requests(publisher)
    assert len(requests) == 2 and len({group_key(request) for request in requests}) == 1  # one batcher group
    dsns = sent_success(kit, requests)
    dsn = read_dsn(dsns.content)
    assert dsn.field("Subject") == "Successful Mail Delivery Report"
    assert dsn.kind == "success"
    assert [dict(block)["Action"] for block in dsn.recipient_blocks] == ["delivered", "relayed"]
    assert [dict(block)["Status"] for block in dsn.recipient_blocks] == ["2.0.0", "2.0.0"]
    assert [dict(block)["Diagnostic-Code"] for block in dsn.recipient_blocks] == ["smtp; 250 2.0.0 Ok"] * 2
    assert dsn.parts[2].fields[0] == ("Content-Type", "text/rfc822-headers; charset=utf-8")
    assert dsn.flufl == (frozenset(), frozenset())
    assert dsn.text(0).splitlines() == SUCCESS_TEXT


SUCCESS_TEXT = [
    "This is the mail system at host mx.kubemta.test.",
    "",
    "Your message was delivered to the destination(s) listed below.",
    "Where it reached the recipient's mailbox, this is the last notice",
    "you will get about it; where it was relayed to another system,",
    "that system may still send you notices of delivery problems.",
    "",
    "For further assistance, please send mail to the postmaster of",
    "mx.kubemta.test and include this problem report.",
    "",
    "                   The mail system",
    "",
    "<a@example.org>: delivered to the mailbox: host lmtp.example.org said: 250 2.0.0 Ok",
    "<b@example.org>: relayed to a system that does not report delivery status: host mx1.example.org said: 250 2.0.0"
    " Ok",
]


def sent_success(kit, requests: list[message_pb2.DsnRequest]) -> message_pb2.AcceptedMessage:
    report = merged_report(requests, kit.HOSTNAME)
    assert to_datetime(requests[0].arrival_time) == report.arrival
    return dsn_message(report, queue_id="DSN1", now=kit.NOW)


async def test_a_success_without_a_reply_has_no_diagnostic_code(kit, manager, publisher) -> None:
    job = notify_job(kit, "SUCCESS")
    entry = delivered(kit, message_pb2.HANDOFF_DELIVERED)
    entry.smtp_code, entry.diagnostic, entry.status = 0, "", "2.1.5"

    await manager.handle_result(kit.result(job, [entry]))

    [dsn] = kit.dsns(publisher)
    [block] = read_dsn(dsn.content).recipient_blocks
    assert "Diagnostic-Code" not in dict(block) and dict(block)["Status"] == "2.1.5"


async def test_a_retry_keeps_the_parameters_of_its_own_recipients_only(kit, manager, publisher) -> None:
    job = kit.job(["done@example.org", "later@example.org"])
    job.envid, job.ret = "ENV", message_pb2.DSN_RET_HDRS
    for rcpt in job.recipients:
        job.recipient_dsn[rcpt].CopyFrom(parse_recipient_dsn("FAILURE", f"rfc822;{rcpt}"))

    await manager.handle_result(kit.result(job, [kit.delivered("done@example.org"), kit.deferred("later@example.org")]))

    [(_, body, _, _)] = [item for item in publisher.published if item[0].startswith("retry")]
    retry = message_pb2.DeliveryJob.FromString(body)
    assert list(retry.recipient_dsn) == ["later@example.org"]
    assert (retry.envid, retry.ret) == ("ENV", message_pb2.DSN_RET_HDRS)
