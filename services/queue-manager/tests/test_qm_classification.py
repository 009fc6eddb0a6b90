"""Every failure classified (kubemta_common.bounce_class) where it is reported: the deferred, bounced and expired
events, the result log lines, the DSN (its recipients' class and the human-readable Reason line), and the
suppression hook for hard invalid-recipient bounces only. The class table itself is tested in common."""

import logging
from dataclasses import dataclass, field
from datetime import timedelta

import pytest

from kubemta.v1 import message_pb2
from kubemta_common.bounce_class import BounceClass, classify
from kubemta_common.dsn_parameters import parse_recipient_dsn
from kubemta_common.events.deletion import DELETED_STATUS
from kubemta_queue_manager.dsn import Action, RecipientReport, Report, build_dsn, human_lines
from kubemta_queue_manager.dsn_reasons import CLASS_REASONS
from kubemta_queue_manager.fate import Deletion, Disposition, Policy, decide
from kubemta_queue_manager.handlers import QueueManager
from tests.harness.dsn_reader import read_dsn

POLICY = Policy(retry_schedule=(300.0,), max_queue_lifetime=5 * 86400.0, delay_warning_after=4 * 3600.0)


@dataclass
class FakeSuppressionSink:
    """Records what the handler asks to suppress (the real sink buffers and publishes)."""

    calls: list[tuple[str, str, str, str]] = field(default_factory=list)

    def suppress(self, address: str, *, reason: str, queue_id: str, diagnostic: str) -> None:
        self.calls.append((address, reason, queue_id, diagnostic))


@pytest.fixture
def sink() -> FakeSuppressionSink:
    return FakeSuppressionSink()


@pytest.fixture
def suppressing(kit, publisher, events, tracker, decisions, sink) -> QueueManager:
    return QueueManager(
        kit.settings(),
        publisher,
        events=events,
        clock=lambda: kit.NOW,
        tracker=tracker,
        decisions=decisions,
        suppression=sink,
    )


def expected(result: message_pb2.RecipientResult, *, expired: bool = False) -> tuple[str, bool]:
    found = classify(result.smtp_code, result.status, result.diagnostic, expired=expired)
    return found.bounce_class.value, found.hard


async def test_bounced_deferred_and_expired_events_carry_the_class(kit, manager, events) -> None:
    job = kit.job(["a@x.example", "b@x.example"])
    await manager.handle_result(kit.result(job, [kit.bounced("a@x.example"), kit.deferred("b@x.example")]))
    old = kit.job(["c@x.example"], age=timedelta(days=6))
    await manager.handle_result(kit.result(old, [kit.deferred("c@x.example")]))

    [bounced] = [o for e in events.of_kind("bounced") for o in e.bounced.recipients]
    [deferred] = [o for e in events.of_kind("deferred") for o in e.deferred.recipients]
    [expired] = [o for e in events.of_kind("expired") for o in e.expired.recipients]
    assert (bounced.bounce_class, bounced.hard) == ("invalid_recipient", True)
    assert (deferred.bounce_class, deferred.hard) == expected(kit.deferred("b@x.example"))
    assert not deferred.hard
    assert (expired.bounce_class, expired.hard) == ("expired", True)


async def test_delivered_events_carry_no_class(kit, manager, events) -> None:
    await manager.handle_result(kit.result(kit.job(["a@x.example"]), [kit.delivered("a@x.example")]))

    [outcome] = events.of_kind("delivered")[0].delivered.recipients
    assert (outcome.bounce_class, outcome.hard) == ("", False)


async def test_result_log_lines_name_the_class(kit, manager, caplog) -> None:
    job = kit.job(["a@x.example", "b@x.example"])
    with caplog.at_level(logging.DEBUG, logger="kubemta_queue_manager.outcomes"):
        await manager.handle_result(kit.result(job, [kit.bounced("a@x.example"), kit.delivered("b@x.example")]))

    lines = {record.getMessage().split(">")[0]: record.getMessage() for record in caplog.records}
    assert "bounce_class=invalid_recipient hard=true" in lines["to=<a@x.example"]
    assert "bounce_class=" not in lines["to=<b@x.example"]


async def test_the_dsn_request_and_the_dsn_carry_the_class(kit, manager, publisher) -> None:
    job = kit.job(["a@x.example"])

    await manager.handle_result(kit.result(job, [kit.bounced("a@x.example")]))

    [request] = kit.dsn_requests(publisher)
    assert (request.recipients[0].bounce_class, request.recipients[0].hard) == ("invalid_recipient", True)
    [dsn] = kit.dsns(publisher)
    human = read_dsn(dsn.content).text(0).splitlines()
    index = human.index(next(line for line in human if line.startswith("<a@x.example>: ")))
    assert human[index + 1] == "    Reason: the recipient address does not exist (invalid recipient, permanent)"


async def test_a_delay_warning_explains_the_class_as_temporary(kit, manager, publisher) -> None:
    job = kit.job(["a@x.example"], age=timedelta(hours=5))
    full = kit.deferred("a@x.example")
    full.status, full.diagnostic = "4.2.2", "4.2.2 Mailbox full"

    await manager.handle_result(kit.result(job, [full]))

    [dsn] = kit.dsns(publisher)
    human = read_dsn(dsn.content).text(0).splitlines()
    assert "    Reason: the recipient's mailbox is full (mailbox full, temporary)" in human


@pytest.mark.parametrize("value", ["", "not-a-class", "invalid_recipient\r\nAction: delivered"])
def test_an_unknown_class_on_the_bus_writes_no_reason(kit, value: str) -> None:
    entry = RecipientReport("a@x.example", "5.1.1", 550, "unknown", bounce_class=value, hard=True)
    report = Report("mx.kubemta.test", "Q", "s@x.example", kit.NOW, kit.NOW, Action.FAILED, [entry], b"")

    assert not any("Reason:" in line for line in human_lines(report, kit.NOW))
    read_dsn(build_dsn(report, message_id="<QNEW@mx.kubemta.test>", now=kit.NOW))


def test_every_class_has_a_reason() -> None:
    assert set(CLASS_REASONS) == set(BounceClass)


def test_an_operator_deletion_is_classified_but_not_suppressed(kit) -> None:
    job = kit.job(["a@x.example"])

    decision = decide(kit.result(job, [kit.deferred("a@x.example")]), POLICY, kit.NOW, Deletion(dsn=True))

    [fate] = decision.recipients
    assert fate.disposition is Disposition.BOUNCED and fate.result.status == DELETED_STATUS
    assert fate.classification is not None
    assert decision.suppress == []


async def test_a_hard_invalid_recipient_bounce_is_suppressed(kit, suppressing, sink) -> None:
    job = kit.job(["gone@x.example"])
    bounce = kit.bounced("gone@x.example")

    await suppressing.handle_result(kit.result(job, [bounce]))

    assert sink.calls == [("gone@x.example", "invalid_recipient", "QID1", bounce.diagnostic)]


async def test_a_bounce_the_sender_did_not_want_reported_is_still_suppressed(kit, suppressing, sink) -> None:
    job = kit.job(["gone@x.example"])
    job.recipient_dsn["gone@x.example"].CopyFrom(parse_recipient_dsn("NEVER", None))

    await suppressing.handle_result(kit.result(job, [kit.bounced("gone@x.example")]))

    assert [call[0] for call in sink.calls] == ["gone@x.example"]


def _temporary_invalid(kit) -> message_pb2.RecipientResult:
    result: message_pb2.RecipientResult = kit.deferred("a@x.example")
    result.smtp_code, result.status, result.diagnostic = 450, "4.1.1", "4.1.1 mailbox unavailable"
    return result


def _mailbox_full(kit) -> message_pb2.RecipientResult:
    result: message_pb2.RecipientResult = kit.bounced("a@x.example")
    result.smtp_code, result.status, result.diagnostic = 552, "5.2.2", "5.2.2 Mailbox full"
    return result


def _policy(kit) -> message_pb2.RecipientResult:
    result: message_pb2.RecipientResult = kit.bounced("a@x.example")
    result.smtp_code, result.status, result.diagnostic = 550, "5.7.1", "5.7.1 Message rejected by policy"
    return result


@pytest.mark.parametrize(
    ("make", "age"),
    [
        (lambda kit: kit.deferred("a@x.example"), timedelta(minutes=10)),  # deferred
        (_temporary_invalid, timedelta(minutes=10)),  # 4.1.1: not hard
        (_temporary_invalid, timedelta(days=6)),  # expired: never suppressed
        (_mailbox_full, timedelta(minutes=10)),  # permanent, but soft and another class
        (_policy, timedelta(minutes=10)),
        (lambda kit: kit.delivered("a@x.example"), timedelta(minutes=10)),
    ],
)
async def test_nothing_else_is_suppressed(kit, suppressing, sink, make, age) -> None:
    await suppressing.handle_result(kit.result(kit.job(["a@x.example"], age=age), [make(kit)]))

    assert sink.calls == []


async def test_nothing_is_suppressed_when_publishing_fails(kit, suppressing, sink, publisher) -> None:
    publisher.fail = True
    with pytest.raises(Exception, match="no confirm"):
        await suppressing.handle_result(kit.result(kit.job(["gone@x.example"]), [kit.bounced("gone@x.example")]))

    assert sink.calls == []
