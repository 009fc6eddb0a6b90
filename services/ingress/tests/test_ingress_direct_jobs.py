"""The ingress' direct jobs (direct_jobs.py): a message of one job whose domain has a fresh route answer goes
straight to `deliver`, the same job the queue-manager would have made, with the `queued` and `routed` events it
would have written; everything else (two domains, DKIM-signed mail, a stale or missing answer, an operator's
decision, decisions not yet read) goes to `inbound` as before; a refused publish gets 451 and no event."""

import asyncio
import ipaddress
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from kubemta.v1 import events_pb2, message_pb2
from kubemta_common.amqp.topology import DELIVER, INBOUND
from kubemta_common.errors import PublishFailed
from kubemta_common.events.decision_follower import JobVerdicts
from kubemta_common.events.decisions import Decisions
from kubemta_common.route_answers import RouteAnswers
from kubemta_common.route_shortcut import RouteShortcut
from kubemta_common.splitter import split
from kubemta_ingress.acceptance import MailAcceptance, Queued, Refusal
from kubemta_ingress.direct_jobs import DirectJobs, DirectJobsFollowers
from kubemta_ingress.policy import RelayPolicy
from kubemta_ingress.settings import IngressSettings
from kubemta_ingress.submission import Submission
from tests.harness.fake_events import RecordingEvents
from tests.harness.fake_publisher import FakePublisher
from tests.harness.route_answers_kit import fresh_answers

HOSTNAME = "mx.kubemta.test"
SENDER = "app@example.com"
CONTENT = b"From: app@example.com\r\nTo: bob@example.org\r\nMessage-ID: <m1@example.com>\r\nSubject: t\r\n\r\nHi.\r\n"
CLIENT = ipaddress.ip_address("10.0.0.5")


def hold(domain: str) -> events_pb2.AdminDecision:
    decision = events_pb2.AdminDecision(
        decision_id="D1",
        actor="alice",
        verb=events_pb2.DECISION_VERB_HOLD,
        selector=events_pb2.Selector(domain=domain),
    )
    decision.time.FromDatetime(datetime.now(UTC) + timedelta(minutes=1))  # it applies to mail arrived before it
    return decision


def direct_jobs(
    answers: RouteAnswers,
    *,
    decisions: Decisions | None = None,
    ready: asyncio.Event | None = None,
    signing: bool = False,
) -> DirectJobs:
    shortcut = RouteShortcut(answers, JobVerdicts(decisions, ready), decisions_ready=ready)
    return DirectJobs(shortcut, hostname=HOSTNAME, signing=signing)


def acceptance(publisher: FakePublisher, events: RecordingEvents, direct: DirectJobs | None) -> MailAcceptance:
    return MailAcceptance(
        hostname=HOSTNAME,
        policy=RelayPolicy.create([], [ipaddress.ip_network("10.0.0.0/8")]),
        max_recipients=100,
        max_message_size=1_000_000,
        publisher=publisher,
        events=events,
        direct=direct,
    )


def submission(*recipients: str, trust: int = message_pb2.TRUST_RELAY_NETWORK, content: bytes = CONTENT) -> Submission:
    return Submission(
        sender=SENDER,
        recipients=list(recipients) or ["bob@example.org"],
        content=content,
        client=CLIENT,
        helo="app.example.com",
        user=None,
        trust=trust,  # type: ignore[arg-type]
        listener="smtp",
        protocol="ESMTP",
    )


def sample(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


async def test_a_message_of_one_job_with_a_fresh_answer_goes_straight_to_deliver_with_its_events() -> None:
    publisher, events = FakePublisher(), RecordingEvents()
    accepting = acceptance(publisher, events, direct_jobs(fresh_answers("example.org")))
    jobs_before = sample("kubemta_jobs_created_total")
    split_before = sample("kubemta_messages_split_total")

    queued = await accepting.queue(submission("bob@example.org", "Carol@Example.ORG"))

    assert isinstance(queued, Queued)
    [published] = publisher.published
    assert (published.routing_key, published.message_id) == (DELIVER, f"{queued.queue_id}.1")
    assert published.message_type == "kubemta.v1.DeliveryJob"
    job = message_pb2.DeliveryJob.FromString(published.body)
    assert (job.queue_id, job.job_id, job.domain) == (queued.queue_id, f"{queued.queue_id}.1", "example.org")
    assert list(job.recipients) == ["bob@example.org", "Carol@Example.ORG"]
    assert job.sender == SENDER and job.attempts == 0 and not job.maybe_duplicate
    assert job.content.startswith(b"Received: from app.example.com") and b"\r\nSubject: t\r\n" in job.content
    assert {host.address for host in job.route.hosts} == {"192.0.2.1", "192.0.2.2", "192.0.2.3"}
    assert job.HasField("arrival_time") and job.message_id == "<m1@example.com>"
    assert events.kinds() == ["received", "queued", "routed"]
    _, queued_event, routed_event = events.events
    assert [(entry.job_id, list(entry.recipients)) for entry in queued_event.queued.jobs] == [
        (job.job_id, list(job.recipients))
    ]
    assert routed_event.job_id == job.job_id and routed_event.routed.domain == "example.org"
    assert len(routed_event.routed.hosts) == 3
    assert sample("kubemta_jobs_created_total") - jobs_before == 1
    assert sample("kubemta_messages_split_total") - split_before == 1


async def test_the_direct_job_is_the_job_the_queue_manager_would_have_made() -> None:
    publisher = FakePublisher()
    inbound_publisher = FakePublisher()
    await acceptance(publisher, RecordingEvents(), direct_jobs(fresh_answers("example.org"))).queue(
        submission("bob@example.org")
    )
    await acceptance(inbound_publisher, RecordingEvents(), None).queue(submission("bob@example.org"))
    job = message_pb2.DeliveryJob.FromString(publisher.published[0].body)
    accepted = message_pb2.AcceptedMessage.FromString(inbound_publisher.published[0].body)
    [expected] = split(accepted, HOSTNAME)
    for field in ("queue_id", "job_id", "arrival_time", "content"):  # this run's own id, time and trace header
        job.ClearField(field)
        expected.ClearField(field)
    job.ClearField("route")
    assert job == expected


@pytest.mark.parametrize(
    ("recipients", "why"),
    [
        (("bob@example.org", "dave@example.net"), "two domains: two jobs, which the queue-manager queues all or none"),
        (("bob@stale.example",), "a stale answer"),
        (("bob@unknown.example",), "no answer"),
    ],
)
async def test_what_does_not_qualify_goes_to_inbound(recipients: tuple[str, ...], why: str) -> None:
    publisher, events = FakePublisher(), RecordingEvents()
    answers = fresh_answers("example.org", "example.net")
    fresh_answers("stale.example", fresh_for=10.0, resolved=time.time() - 60, into=answers)
    stale, missing = (
        sample("kubemta_route_answers_total", {"result": "stale"}),
        sample("kubemta_route_answers_total", {"result": "missing"}),
    )
    queued = await acceptance(publisher, events, direct_jobs(answers)).queue(submission(*recipients))
    assert isinstance(queued, Queued), why
    [published] = publisher.published
    assert published.routing_key == INBOUND, why
    assert events.kinds() == ["received"], why
    looked_up = (
        sample("kubemta_route_answers_total", {"result": "stale"})
        - stale
        + sample("kubemta_route_answers_total", {"result": "missing"})
        - missing
    )
    assert looked_up == (0 if len(recipients) > 1 else 1), "a two-domain message is not looked up at all"


async def test_trusted_mail_is_left_to_the_queue_manager_when_it_dkim_signs() -> None:
    publisher = FakePublisher()
    signing = direct_jobs(fresh_answers("example.org"), signing=True)
    await acceptance(publisher, RecordingEvents(), signing).queue(submission("bob@example.org"))
    await acceptance(publisher, RecordingEvents(), signing).queue(
        submission("bob@example.org", trust=message_pb2.TRUST_UNTRUSTED)  # never signed: straight to deliver
    )
    assert [published.routing_key for published in publisher.published] == [INBOUND, DELIVER]


async def test_a_held_domain_and_unread_decisions_go_to_inbound() -> None:
    decisions = Decisions(86400.0)
    decisions.apply(hold("example.org"))
    publisher = FakePublisher()
    await acceptance(
        publisher, RecordingEvents(), direct_jobs(fresh_answers("example.org"), decisions=decisions)
    ).queue(submission("bob@example.org"))
    ready = asyncio.Event()
    unread = direct_jobs(fresh_answers("example.org"), decisions=Decisions(86400.0), ready=ready)
    await acceptance(publisher, RecordingEvents(), unread).queue(submission("bob@example.org"))
    ready.set()
    await acceptance(publisher, RecordingEvents(), unread).queue(submission("bob@example.org"))
    assert [published.routing_key for published in publisher.published] == [INBOUND, INBOUND, DELIVER]


async def test_a_refused_deliver_publish_gets_451_and_no_event() -> None:
    publisher, events = FakePublisher(PublishFailed("broker refused the message")), RecordingEvents()
    refused = await acceptance(publisher, events, direct_jobs(fresh_answers("example.org"))).queue(
        submission("bob@example.org")
    )
    assert isinstance(refused, Refusal)
    assert refused.reply.startswith("451 4.3.0")
    assert events.events == []


DOMAIN_LABEL = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-ÄéXYZ", min_size=1, max_size=20)
LOCAL_PART = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=30)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    recipients=st.lists(
        st.one_of(
            st.tuples(LOCAL_PART, DOMAIN_LABEL).map(lambda pair: f"{pair[0]}@{pair[1]}.example"),
            st.sampled_from(["postmaster", "Bob@Example.ORG", "bob@example.org.", '"odd@x"@example.org']),
        ),
        min_size=1,
        max_size=5,
    )
)
def test_any_recipients_make_the_queue_managers_jobs_or_go_to_inbound(recipients: list[str]) -> None:
    """Hostile recipient lists: the ingress sends a job straight to `deliver` only when the queue-manager's
    splitter makes exactly one job of them, and then exactly that job."""
    domains = {address.rpartition("@")[2].lower().rstrip(".") for address in recipients if "@" in address}
    answers = fresh_answers("example.org", HOSTNAME, *domains)
    head = message_pb2.AcceptedMessage(queue_id="QH", sender=SENDER, recipients=recipients)
    job = asyncio.run(direct_jobs(answers).job(head))
    expected = split(head, HOSTNAME)
    if len(expected) != 1:
        assert job is None
        return
    assert job is not None
    job.ClearField("route")
    assert job == expected[0]


def ingress_settings(**values: object) -> IngressSettings:
    return IngressSettings.model_validate({"amqp_url": "amqp://guest:guest@127.0.0.1:5672/x", **values})


def test_the_setting_off_means_no_direct_jobs_and_dkim_keys_mean_signing(tmp_path: Path) -> None:
    assert DirectJobsFollowers.from_settings(ingress_settings(route_shortcut=False)) is None
    on = DirectJobsFollowers.from_settings(ingress_settings())
    assert on is not None and not on.signing
    signing = DirectJobsFollowers.from_settings(ingress_settings(dkim_keys_dir=tmp_path))
    assert signing is not None and signing.signing
