"""Decisions (the pure view of operators' rules) and DecisionFollower against a real `decisions` stream."""

import asyncio
import logging
from datetime import UTC, datetime, timedelta

import aio_pika
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from kubemta.v1 import events_pb2, message_pb2
from kubemta_common.amqp.broker import Broker
from kubemta_common.amqp.streams import DECISIONS
from kubemta_common.events.decision_follower import BackgroundFollower, DecisionFollower, JobVerdicts
from kubemta_common.events.decisions import GO_ON, Action, Decisions, describe, normal_domain, normal_sender
from tests.harness.rabbitmq import Vhost

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
DELETE = events_pb2.DECISION_VERB_DELETE
HOLD = events_pb2.DECISION_VERB_HOLD
RELEASE = events_pb2.DECISION_VERB_RELEASE

_ids = iter(range(10**9))


def decision(
    verb: int,
    *,
    at: datetime = NOW,
    queue_id: str = "",
    sender: str = "",
    domain: str = "",
    all: bool = False,
    dsn: bool = False,
    decision_id: str | None = None,
) -> events_pb2.AdminDecision:
    made = events_pb2.AdminDecision(
        decision_id=f"D{next(_ids)}" if decision_id is None else decision_id,
        actor="alice",
        verb=verb,  # type: ignore[arg-type]
        selector=events_pb2.Selector(queue_id=queue_id, sender=sender, domain=domain, all=all),
        dsn=dsn,
    )
    made.time.FromDatetime(at)
    return made


def selected(verb: int, selector: dict[str, str], at: datetime = NOW) -> events_pb2.AdminDecision:
    """A decision whose selector fields come from a dict (queue_id, sender, domain)."""
    return decision(
        verb,
        at=at,
        queue_id=selector.get("queue_id", ""),
        sender=selector.get("sender", ""),
        domain=selector.get("domain", ""),
    )


def decisions(*applied: events_pb2.AdminDecision, now: datetime = NOW, **options: int) -> Decisions:
    view = Decisions(7 * 86400.0, clock=lambda: now, **options)
    for one in applied:
        view.apply(one)
    return view


def ask(
    view: Decisions,
    *,
    queue_id: str = "Q1",
    sender: str = "alice@example.com",
    domain: str = "example.org",
    arrival: datetime = NOW - timedelta(minutes=5),
) -> Action:
    return view.verdict(queue_id=queue_id, sender=sender, domain=domain, arrival=arrival).action


# --- the pure view ---------------------------------------------------------------------------------------------


def test_no_rules_means_go_on() -> None:
    assert decisions().verdict(queue_id="Q1", sender="", domain="d", arrival=NOW) == GO_ON


@pytest.mark.parametrize(
    "selector",
    [{"queue_id": "Q1"}, {"sender": "alice@example.com"}, {"domain": "example.org"}],
)
def test_each_selector_field_matches(selector: dict[str, str]) -> None:
    view = decisions(selected(HOLD, selector))
    assert ask(view) is Action.HOLD
    assert ask(view, queue_id="Q2", sender="bob@example.com", domain="example.net") is Action.NONE


def test_every_non_empty_field_must_match() -> None:
    view = decisions(decision(DELETE, sender="alice@example.com", domain="example.org"))
    assert ask(view) is Action.DELETE
    assert ask(view, domain="example.net") is Action.NONE
    assert ask(view, sender="bob@example.com") is Action.NONE


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ("Alice@EXAMPLE.com", "alice@example.com"),
        ("<alice@example.com>", "ALICE@example.COM"),
        ("alice@example.com", "<alice@example.com>"),
    ],
)
def test_the_sender_matches_case_insensitively(rule: str, message: str) -> None:
    assert ask(decisions(decision(HOLD, sender=rule)), sender=message) is Action.HOLD


@pytest.mark.parametrize(
    ("rule", "message"),
    [("EXAMPLE.org", "example.ORG"), ("example.org.", "example.org"), ("bücher.de", "xn--bcher-kva.de")],
)
def test_the_domain_matches_case_insensitively(rule: str, message: str) -> None:
    assert ask(decisions(decision(HOLD, domain=rule)), domain=message) is Action.HOLD


@pytest.mark.parametrize("message_sender", ["", "<>", " <> "])
def test_the_null_sender_is_named_by_angle_brackets(message_sender: str) -> None:
    view = decisions(decision(DELETE, sender="<>"))
    assert ask(view, sender=message_sender) is Action.DELETE
    assert ask(view, sender="alice@example.com") is Action.NONE


def test_a_rule_applies_only_to_mail_that_arrived_at_or_before_it() -> None:
    view = decisions(decision(HOLD, domain="example.org", at=NOW))
    assert ask(view, arrival=NOW - timedelta(seconds=1)) is Action.HOLD
    assert ask(view, arrival=NOW) is Action.HOLD
    assert ask(view, arrival=NOW + timedelta(seconds=1)) is Action.NONE
    assert ask(view, arrival=(NOW - timedelta(seconds=1)).replace(tzinfo=None)) is Action.HOLD  # naive is UTC


def test_delete_beats_hold_and_release_whatever_the_order() -> None:
    view = decisions(
        decision(DELETE, domain="example.org", at=NOW - timedelta(minutes=1), dsn=True),
        decision(HOLD, queue_id="Q1", at=NOW),
        decision(RELEASE, all=True, at=NOW + timedelta(minutes=1)),
    )
    verdict = view.verdict(queue_id="Q1", sender="a@b", domain="example.org", arrival=NOW - timedelta(hours=1))
    assert verdict.action is Action.DELETE
    assert verdict.dsn is True
    assert verdict.decision is not None and verdict.decision.selector.domain == "example.org"


def test_the_latest_decided_hold_or_release_wins() -> None:
    hold = decision(HOLD, sender="alice@example.com", at=NOW - timedelta(minutes=2))
    release = decision(RELEASE, queue_id="Q1", at=NOW - timedelta(minutes=1))
    arrival = NOW - timedelta(hours=1)
    assert ask(decisions(hold, release), arrival=arrival) is Action.NONE
    assert ask(decisions(release, hold), arrival=arrival) is Action.NONE  # decided later, whatever the stream order
    hold_again = decision(HOLD, domain="example.org", at=NOW)
    assert ask(decisions(hold, release, hold_again), arrival=arrival) is Action.HOLD
    verdict = decisions(hold, release).verdict(queue_id="Q1", sender="x@y", domain="d", arrival=arrival)
    assert verdict.decision == release and verdict.dsn is False


def test_a_release_does_not_free_mail_that_arrived_after_it_from_an_older_hold() -> None:
    view = decisions(decision(HOLD, domain="example.org", at=NOW), decision(RELEASE, all=True, at=NOW - timedelta(1)))
    assert ask(view, arrival=NOW - timedelta(minutes=1)) is Action.HOLD


def test_a_job_released_since_a_hold_is_not_held_again_by_it_before_the_release_decision_is_read() -> None:
    """The tracker sends a released job back to `route` right after appending the RELEASE decision; a resolver
    may get the job first. The job says when it was released (DeliveryJob.released_at)."""
    hold = decision(HOLD, domain="example.org", at=NOW - timedelta(minutes=2))
    view = decisions(hold)  # the RELEASE decision has not been read here yet
    arrival = NOW - timedelta(hours=1)
    released = view.verdict(
        queue_id="Q1", sender="a@b", domain="example.org", arrival=arrival, released_at=NOW - timedelta(minutes=1)
    )
    assert released.action is Action.NONE
    assert view.verdict(queue_id="Q1", sender="a@b", domain="example.org", arrival=arrival).action is Action.HOLD
    hold_again = decision(HOLD, queue_id="Q1", at=NOW)  # a hold issued after the release still holds it
    view.apply(hold_again)
    again = view.verdict(
        queue_id="Q1", sender="a@b", domain="example.org", arrival=arrival, released_at=NOW - timedelta(minutes=1)
    )
    assert again.action is Action.HOLD and again.decision == hold_again
    view.apply(decision(DELETE, queue_id="Q1", at=NOW - timedelta(minutes=3)))  # a release never undoes a delete
    assert (
        view.verdict(queue_id="Q1", sender="a@b", domain="example.org", arrival=arrival, released_at=NOW).action
        is Action.DELETE
    )


async def test_job_verdicts_pass_the_jobs_release_time() -> None:
    view = decisions(decision(HOLD, domain="example.org", at=NOW - timedelta(minutes=2)))
    job = message_pb2.DeliveryJob(queue_id="Q1", sender="a@b", domain="example.org")
    job.arrival_time.FromDatetime(NOW - timedelta(hours=1))
    verdicts = JobVerdicts(view)
    assert (await verdicts.verdict(job)).action is Action.HOLD
    job.released_at.FromDatetime(NOW - timedelta(minutes=1))
    assert (await verdicts.verdict(job)).action is Action.NONE


def test_release_all_matches_every_message_before_it() -> None:
    view = decisions(decision(HOLD, domain="example.org", at=NOW), decision(RELEASE, all=True, at=NOW))
    assert ask(view) is Action.NONE


@pytest.mark.parametrize("verb", [DELETE, HOLD])
def test_delete_or_hold_of_all_mail_is_ignored(verb: int, caplog: pytest.LogCaptureFixture) -> None:
    view = decisions(decision(verb, all=True))
    assert ask(view) is Action.NONE
    assert len(view) == 0
    assert "release only" in caplog.text


@pytest.mark.parametrize(
    "selector",
    [{}, {"domain": "."}, {"domain": "..."}, {"sender": "   "}, {"queue_id": " "}, {"queue_id": "Q1", "domain": "."}],
)
def test_a_selector_that_names_nothing_is_ignored(selector: dict[str, str]) -> None:
    view = decisions(selected(DELETE, selector))
    assert len(view) == 0
    assert ask(view, domain="", sender="") is Action.NONE


def test_unknown_verbs_missing_times_and_long_fields_are_ignored() -> None:
    no_time = decision(DELETE, domain="example.org")
    no_time.ClearField("time")
    view = decisions(
        decision(0, domain="example.org"),
        decision(99, domain="example.org"),
        no_time,
        decision(DELETE, domain="x" * 2000),
    )
    assert len(view) == 0


def test_an_out_of_range_time_is_ignored() -> None:
    bad = decision(DELETE, domain="example.org")
    bad.time.seconds = 10**15
    assert len(decisions(bad)) == 0


def test_rules_expire_after_max_age() -> None:
    old = decision(HOLD, domain="example.org", at=NOW - timedelta(days=8))
    assert len(decisions(old)) == 0  # expired when applied (a restarted service reads only what the stream kept)
    clock = [NOW]
    view = Decisions(3600.0, clock=lambda: clock[0])
    view.apply(decision(HOLD, domain="example.org", at=NOW))
    assert ask(view, arrival=NOW - timedelta(hours=2)) is Action.HOLD
    clock[0] = NOW + timedelta(hours=2)
    assert ask(view, arrival=NOW - timedelta(hours=2)) is Action.NONE
    assert len(view) == 0


def test_the_same_decision_twice_is_one_rule() -> None:
    one = decision(HOLD, domain="example.org", decision_id="same")
    view = decisions(one, one)
    assert len(view) == 1
    changed = decision(RELEASE, domain="example.org", decision_id="same")
    view.apply(changed)
    assert len(view) == 1
    assert ask(view) is Action.NONE


def test_at_most_max_rules_are_kept_the_oldest_dropped(caplog: pytest.LogCaptureFixture) -> None:
    view = decisions(
        decision(HOLD, domain="first.example"),
        *(decision(HOLD, queue_id=f"Q{index}") for index in range(5)),
        max_rules=3,
    )
    assert len(view) == 3
    assert ask(view, domain="first.example", queue_id="none") is Action.NONE  # dropped
    assert ask(view, queue_id="Q4") is Action.HOLD
    assert "dropping the oldest" in caplog.text


def test_many_rules_are_found_through_their_index() -> None:
    view = decisions(*(decision(HOLD, queue_id=f"Q{index}") for index in range(20000)))
    assert ask(view, queue_id="Q19999") is Action.HOLD
    assert ask(view, queue_id="nope", sender="s@x", domain="y") is Action.NONE


def test_describe_sanitises_client_text() -> None:
    line = describe(decision(HOLD, sender="evil\r\nINFO forged@x", decision_id="D\x00"))
    assert "\r" not in line and "\n" not in line and "\x00" not in line
    assert "HOLD" in line


text = st.text(max_size=40)


@settings(max_examples=200, deadline=None)
@given(sender=text, domain=text, queue_id=text)
def test_hostile_selectors_never_crash_and_never_match_more_than_they_name(
    sender: str, domain: str, queue_id: str
) -> None:
    caplog_free = logging.getLogger("kubemta_common.events.decisions")
    caplog_free.disabled = True
    try:
        view = decisions(decision(DELETE, sender=sender, domain=domain, queue_id=queue_id))
        if len(view) == 0:
            return
        verdict = view.verdict(queue_id="Q-other", sender="nobody@unrelated.test", domain="unrelated.test", arrival=NOW)
        # a rule that kept a field matches only mail that field names
        assert verdict.action is Action.NONE or (
            (not queue_id.strip() or queue_id.strip() == "Q-other")
            and (not sender.strip() or normal_sender(sender) == "nobody@unrelated.test")
            and (not domain.strip() or normal_domain(domain) == "unrelated.test")
        )
    finally:
        caplog_free.disabled = False


@given(st.text(max_size=60))
@example("0 .")  # hypothesis found it: white space before a trailing dot stayed until the second pass
@example("a\u3002")  # IDNA turns a trailing ideographic full stop into a dot
@example(" x . . ")
def test_normalising_is_idempotent(value: str) -> None:
    assert normal_sender(normal_sender(value)) == normal_sender(value)
    assert normal_domain(normal_domain(value)) == normal_domain(value)


@given(st.emails())
def test_a_sender_rule_matches_its_address_in_any_case(address: str) -> None:
    view = decisions(decision(HOLD, sender=address.upper()))
    assert ask(view, sender=f"<{address.lower()}>") is Action.HOLD


# --- the follower, against a real stream -----------------------------------------------------------------------


async def _publish(url: str, *bodies: bytes) -> None:
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange("kubemta")
        for body in bodies:
            await exchange.publish(aio_pika.Message(body), DECISIONS, mandatory=True)
    finally:
        await connection.close()


def _now_decision(verb: int, **selector: str) -> events_pb2.AdminDecision:
    return selected(verb, selector, at=datetime.now(UTC))


@pytest.mark.broker
async def test_a_decision_published_before_the_follower_started_is_honoured_once_ready(
    vhost: Vhost, broker: Broker
) -> None:
    arrival = datetime.now(UTC) - timedelta(minutes=1)
    await _publish(
        vhost.url,
        _now_decision(HOLD, domain="held.example").SerializeToString(),
        b"\xff\xff not a decision",
        _now_decision(DELETE, queue_id="Q-doomed").SerializeToString(),
    )
    view = Decisions()
    follower = DecisionFollower(broker, view)
    task = asyncio.create_task(follower.run())
    try:
        async with asyncio.timeout(20):
            await follower.ready.wait()
        held = view.verdict(queue_id="Q1", sender="a@b", domain="HELD.example", arrival=arrival)
        assert held.action is Action.HOLD
        deleted = view.verdict(queue_id="Q-doomed", sender="a@b", domain="other.example", arrival=arrival)
        assert deleted.action is Action.DELETE
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


class WatchedDecisions(Decisions):
    """Decisions that tell a test each time one was applied."""

    def __init__(self) -> None:
        super().__init__()
        self.applied = asyncio.Event()

    def apply(self, decision: events_pb2.AdminDecision) -> None:
        super().apply(decision)
        self.applied.set()


@pytest.mark.broker
async def test_a_decision_published_later_is_applied_within_a_bounded_wait(vhost: Vhost, broker: Broker) -> None:
    view = WatchedDecisions()
    follower = DecisionFollower(broker, view)
    task = asyncio.create_task(follower.run())
    try:
        async with asyncio.timeout(20):
            await follower.ready.wait()
        arrival = datetime.now(UTC) - timedelta(seconds=1)
        assert view.verdict(queue_id="Q1", sender="", domain="d", arrival=arrival).action is Action.NONE
        await _publish(vhost.url, _now_decision(DELETE, sender="<>").SerializeToString())
        async with asyncio.timeout(10):
            await view.applied.wait()
        assert view.verdict(queue_id="Q1", sender="", domain="d", arrival=arrival).action is Action.DELETE
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


@pytest.mark.broker
async def test_a_background_follower_answers_job_verdicts_once_ready_and_stops(vhost: Vhost, broker: Broker) -> None:
    await _publish(vhost.url, _now_decision(DELETE, domain="gone.example").SerializeToString())
    following = BackgroundFollower(3600.0)
    follower = following.start(broker)
    job = message_pb2.DeliveryJob(queue_id="Q1", sender="a@b.example", domain="gone.example")
    job.arrival_time.FromDatetime(datetime.now(UTC) - timedelta(minutes=1))
    try:
        async with asyncio.timeout(20):  # the first verdict waits for the follower to catch up
            verdict = await JobVerdicts(follower.decisions, follower.ready).verdict(job)
        assert follower.ready.is_set() and verdict.action is Action.DELETE
        assert follower.decisions is following.decisions
    finally:
        await following.stop()
    assert not [task for task in asyncio.all_tasks() if task.get_name() == "kubemta-decisions"]
    await following.stop()  # again: nothing to stop


async def test_job_verdicts_without_decisions_go_on_and_a_slow_follower_is_waited_for_a_bounded_time(
    caplog: pytest.LogCaptureFixture,
) -> None:
    job = message_pb2.DeliveryJob(queue_id="Q1", sender="a@b.example", domain="held.example")
    job.arrival_time.FromDatetime(NOW - timedelta(minutes=1))
    assert await JobVerdicts(None).verdict(job) is GO_ON
    view = decisions(decision(HOLD, domain="held.example"))
    never = asyncio.Event()
    with caplog.at_level(logging.WARNING, logger="kubemta_common.events.decision_follower"):
        verdict = await JobVerdicts(view, never, ready_within=0.05).verdict(job)
    assert verdict.action is Action.HOLD  # what was read decides
    assert "decisions not read within" in caplog.text
