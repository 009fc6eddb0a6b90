"""Which fate events an endpoint gets (submitter, events, tags) and the payload's shape, with hostile diagnostics."""

import json
from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from kubemta.v1 import events_pb2, message_pb2
from kubemta_webhooks.endpoints import Endpoint
from kubemta_webhooks.fates import MAX_DIAGNOSTIC, fate_of, matches, payload

APP = "system:serviceaccount:shop:billing"


def endpoint(
    submitters: tuple[str, ...] = (APP,), events: tuple[str, ...] = ("delivered", "bounced"), tags: tuple[str, ...] = ()
) -> Endpoint:
    return Endpoint(
        "billing", "https://hooks.example/x", b"k" * 32, frozenset(submitters), frozenset(events), frozenset(tags)
    )


def fate_event(
    kind: str = "delivered", *, submitter: str = APP, tags: tuple[str, ...] = (), diagnostic: str = "ok"
) -> events_pb2.LifecycleEvent:
    event = events_pb2.LifecycleEvent(
        event_id="ev1",
        service="queue-manager",
        queue_id="Q1",
        message_id="<m1@shop.example>",
        job_id="Q1.example.org",
        attempt=2,
        submitter=submitter,
        tags=tags,
    )
    event.time.FromDatetime(datetime(2026, 3, 2, 10, 0, 0, 123000, tzinfo=UTC))
    fate = events_pb2.RecipientsFate(
        domain="example.org",
        recipients=[
            events_pb2.RecipientOutcome(
                recipient="bob@example.org",
                outcome=message_pb2.OUTCOME_DELIVERED if kind == "delivered" else message_pb2.OUTCOME_TEMPORARY,
                smtp_code=250,
                status="2.0.0",
                diagnostic=diagnostic,
                remote_mta="mx.example.org",
            ),
            events_pb2.RecipientOutcome(
                recipient="carol@example.org", outcome=message_pb2.OUTCOME_DELIVERED, smtp_code=250
            ),
        ],
    )
    if kind == "deferred":
        fate.next_attempt.FromDatetime(datetime(2026, 3, 2, 10, 5, tzinfo=UTC))
    getattr(event, kind).CopyFrom(fate)
    return event


def test_only_fate_events_count() -> None:
    assert fate_of(fate_event("bounced")) == "bounced"
    received = events_pb2.LifecycleEvent(event_id="x", received=events_pb2.Received(sender="a@b"))
    assert fate_of(received) is None
    assert fate_of(events_pb2.LifecycleEvent(event_id="y")) is None


def test_matching_by_submitter_events_and_tags() -> None:
    assert matches(endpoint(), "delivered", fate_event())
    assert not matches(endpoint(), "deferred", fate_event("deferred")), "not asked for"
    assert not matches(endpoint(), "delivered", fate_event(submitter="apikey:other")), "another app's mail"
    assert not matches(endpoint(), "delivered", fate_event(submitter="")), "mail without a submitter"
    assert not matches(endpoint(submitters=("system:serviceaccount:shop",)), "delivered", fate_event()), "exact names"
    assert matches(endpoint(submitters=("*",)), "delivered", fate_event(submitter="")), "operators get all mail"
    assert matches(endpoint(submitters=("*",)), "delivered", fate_event(submitter="apikey:other"))
    tagged = endpoint(tags=("invoice", "receipt"))
    assert matches(tagged, "delivered", fate_event(tags=("receipt",)))
    assert not matches(tagged, "delivered", fate_event(tags=("newsletter",)))
    assert not matches(tagged, "delivered", fate_event())


def test_payload_shape() -> None:
    body = payload("delivered", fate_event(tags=("invoice",)))
    assert body.isascii()
    assert json.loads(body) == {
        "type": "message.delivered",
        "id": "ev1",
        "timestamp": "2026-03-02T10:00:00.123Z",
        "queue_id": "Q1",
        "message_id": "<m1@shop.example>",
        "job_id": "Q1.example.org",
        "submitter": APP,
        "tags": ["invoice"],
        "domain": "example.org",
        "attempt": 2,
        "recipients": [
            {
                "recipient": "bob@example.org",
                "outcome": "delivered",
                "status": "2.0.0",
                "smtp_code": 250,
                "diagnostic": "ok",
                "remote_mta": "mx.example.org",
                "bounce_class": "",
                "hard": False,
            },
            {
                "recipient": "carol@example.org",
                "outcome": "delivered",
                "status": "",
                "smtp_code": 250,
                "diagnostic": "",
                "remote_mta": "",
                "bounce_class": "",
                "hard": False,
            },
        ],
    }


def test_a_bounce_says_its_class_and_whether_it_is_hard() -> None:
    event = fate_event("bounced")
    first = event.bounced.recipients[0]
    first.outcome, first.smtp_code, first.status = message_pb2.OUTCOME_PERMANENT, 550, "5.1.1"
    first.bounce_class, first.hard = "invalid_recipient", True
    [bob, _] = json.loads(payload("bounced", event))["recipients"]
    assert (bob["outcome"], bob["bounce_class"], bob["hard"]) == ("permanent", "invalid_recipient", True)


def test_a_deferral_says_when_it_is_tried_again() -> None:
    document = json.loads(payload("deferred", fate_event("deferred")))
    assert document["type"] == "message.deferred"
    assert document["next_attempt"] == "2026-03-02T10:05:00.000Z"
    assert document["recipients"][0]["outcome"] == "temporary"
    assert "next_attempt" not in json.loads(payload("delivered", fate_event()))


def test_a_hostile_diagnostic_stays_one_capped_string() -> None:
    hostile = '550 no","type":"message.delivered"}\r\n\x00\u2028<script>' + "x" * 5000
    document = json.loads(payload("bounced", fate_event("bounced", diagnostic=hostile)))
    assert document["type"] == "message.bounced"
    diagnostic = document["recipients"][0]["diagnostic"]
    assert diagnostic.startswith('550 no","type":"message.delivered"}\r\n\x00\u2028<script>')
    assert len(diagnostic) == MAX_DIAGNOSTIC + 1  # the cap and an ellipsis


@given(st.text(), st.lists(st.text(max_size=50), max_size=5), st.text())
def test_any_text_gives_valid_ascii_json(diagnostic: str, tags: list[str], submitter: str) -> None:
    # protobuf strings are valid UTF-8: no lone surrogates
    clean = [value.encode("utf-8", "ignore").decode("utf-8") for value in (diagnostic, submitter, *tags)]
    event = fate_event("bounced", diagnostic=clean[0], submitter=clean[1], tags=tuple(clean[2:]))
    body = payload("bounced", event)
    assert body.isascii()
    document = json.loads(body)
    assert document["recipients"][0]["diagnostic"].startswith(clean[0][:MAX_DIAGNOSTIC])
    assert len(document["tags"]) == len(tags)
