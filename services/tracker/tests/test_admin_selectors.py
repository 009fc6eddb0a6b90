"""Selectors of the admin commands (no broker): what they accept, what they match, and what a queued message's
facts are, whatever its type."""

import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kubemta.v1 import message_pb2
from kubemta_common.amqp.held import JOB_TYPE
from kubemta_tracker.selectors import ALL, Facts, Selector, facts_of

JOB = message_pb2.DeliveryJob(
    queue_id="Q1",
    job_id="Q1.1",
    sender="Alice@Example.com",
    domain="Example.ORG",
    recipients=["bob@example.org", "carol@example.org"],
    attempts=3,
    message_id="<m1@example.com>",
)


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"queue_id": "0123456789BCDFGH"}, Selector(queue_id="0123456789BCDFGH")),
        ({"sender": "alice@example.com"}, Selector(sender="alice@example.com")),
        ({"sender": "<>"}, Selector(sender="<>")),
        ({"sender": "jörg@bücher.example"}, Selector(sender="jörg@bücher.example")),
        ({"sender": "a@b@example.com"}, Selector(sender="a@b@example.com")),  # odd, harmless: matches nothing
        ({"domain": "example.com"}, Selector(domain="example.com")),
        ({"domain": "[192.0.2.1]"}, Selector(domain="[192.0.2.1]")),
        ({"domain": "bücher.example"}, Selector(domain="bücher.example")),
        ({"all": True, "allow_all": True}, ALL),
        ({"queue_id": "", "domain": "example.com"}, Selector(domain="example.com")),  # empty is absent
    ],
)
def test_valid_selectors(kwargs: dict[str, object], expected: Selector) -> None:
    assert Selector.parse(**kwargs) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"queue_id": ""},
        {"all": True},
        {"all": True, "allow_all": True, "domain": "example.com"},
        {"queue_id": "Q1", "domain": "example.com"},
        {"queue_id": "Q1\r\n"},
        {"queue_id": "Q 1"},
        {"queue_id": "Q" * 65},
        {"queue_id": "Q1\x00"},
        {"sender": "alice@example.com\r\nX: y"},
        {"sender": "alice@example.com\x00"},
        {"sender": "alice"},
        {"sender": "<alice@example.com>"},
        {"sender": '"a b"@example.com'},
        {"sender": "a\u0085@example.com"},  # C1 NEL
        {"sender": "a" * 300 + "@example.com"},
        {"sender": "\ud800@example.com"},  # a lone surrogate
        {"sender": "ü" * 130 + "@x.example"},  # 256+ bytes of UTF-8 in fewer characters
        {"sender": "alice@example.com\u2028"},  # a line separator
        {"sender": "alice\u202e@example.com"},  # a bidi override
        {"sender": "alice@example.com\ufeff"},
        {"sender": "alice\u00a0@example.com"},  # a no-break space
        {"domain": "example.com\u3000"},
        {"domain": "."},  # names nothing (the services ignore such a rule)
        {"domain": "..."},
        {"domain": "example.com\n"},
        {"domain": "exa mple.com"},
        {"domain": "a@example.com"},
        {"domain": "a" * 256},
        {"domain": "\ud800.example"},
        {"domain": "x" * 10240},
    ],
)
def test_hostile_selectors_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        Selector.parse(**kwargs)  # type: ignore[arg-type]


@settings(max_examples=500, deadline=None, database=None)
@given(field=st.sampled_from(["queue_id", "sender", "domain"]), value=st.text(max_size=600))
def test_whatever_is_accepted_is_safe_to_log_and_to_serialise(field: str, value: str) -> None:
    try:
        selector = Selector.parse(**{field: value})  # type: ignore[arg-type]
    except ValueError:
        return
    text = getattr(selector, field)
    assert text == value
    assert not any(unicodedata.category(char)[0] in "ZC" for char in text)
    assert len(text.encode("utf-8")) <= 256
    assert selector.to_proto().SerializeToString()
    assert "\n" not in selector.describe()


def facts(**overrides: object) -> Facts:
    values: dict[str, object] = {"queue_id": "Q1", "sender": "Alice@Example.com", "domains": ("Example.ORG",)}
    values.update(overrides)
    return Facts(**values)  # type: ignore[arg-type]


def test_matching() -> None:
    assert Selector(queue_id="Q1").matches(facts())
    assert not Selector(queue_id="q1").matches(facts())  # queue ids are case-sensitive
    assert Selector(sender="alice@EXAMPLE.com").matches(facts())
    assert not Selector(sender="alice@example.co").matches(facts())
    assert Selector(sender="<>").matches(facts(sender=""))
    assert not Selector(sender="<>").matches(facts())
    assert Selector(domain="example.org").matches(facts())
    assert Selector(domain="b.example").matches(facts(domains=("a.example", "B.example")))
    assert not Selector(domain="example.org").matches(facts(domains=()))
    assert Selector(domain="example.org.").matches(facts())  # as the services' Decisions view compares
    assert Selector(domain="BÜCHER.example").matches(facts(domains=("xn--bcher-kva.example",)))
    assert Selector(domain="xn--bcher-kva.example").matches(facts(domains=("bücher.example",)))
    assert ALL.matches(facts()) and ALL.matches(None)
    assert not Selector(queue_id="Q1").matches(None)  # an unreadable message: only `all` names it


def test_facts_of_every_bus_type() -> None:
    job = facts_of(JOB_TYPE, JOB.SerializeToString())
    assert job is not None
    assert (job.queue_id, job.job_id, job.sender, job.domains, job.attempt) == (
        "Q1",
        "Q1.1",
        "Alice@Example.com",
        ("Example.ORG",),
        3,
    )
    assert job.message_id == "<m1@example.com>" and job.job == JOB

    result = message_pb2.DeliveryResult(job=JOB)
    from_result = facts_of("kubemta.v1.DeliveryResult", result.SerializeToString())
    assert from_result is not None and from_result.job == JOB

    accepted = message_pb2.AcceptedMessage(
        queue_id="Q2", sender="x@y.example", recipients=["a@one.example", "b@two.example", "c@one.example"]
    )
    from_accepted = facts_of("kubemta.v1.AcceptedMessage", accepted.SerializeToString())
    assert from_accepted is not None
    assert from_accepted.domains == ("one.example", "two.example") and from_accepted.job is None

    request = message_pb2.DsnRequest(queue_id="Q3", sender="x@y.example", job_id="Q3.1")
    from_request = facts_of("kubemta.v1.DsnRequest", request.SerializeToString())
    assert from_request is not None and (from_request.queue_id, from_request.job_id) == ("Q3", "Q3.1")

    assert facts_of(JOB_TYPE, b"\xff\xff\xff") is None
    assert facts_of("kubemta.v1.Unknown", JOB.SerializeToString()) is None
    assert facts_of(None, JOB.SerializeToString()) is None
