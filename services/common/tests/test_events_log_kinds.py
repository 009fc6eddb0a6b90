"""KUBEMTA_LOG_EVENTS: which lifecycle events are also log lines. Every event still goes to the stream."""

import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kubemta.v1 import events_pb2
from kubemta_common.errors import ConfigError
from kubemta_common.events.emitter import EventLog
from kubemta_common.events.log_kinds import EVENT_KINDS, logged_kinds
from kubemta_common.settings import ServiceSettings
from tests.harness.fake_events import offline_event_log


def offline_log(kinds: frozenset[str] | None) -> EventLog:
    return offline_event_log(kinds=kinds)


def event(kind: str) -> events_pb2.LifecycleEvent:
    message = events_pb2.LifecycleEvent(queue_id="Q1")
    getattr(message, kind).SetInParent()
    return message


def test_all_none_and_a_list_of_kinds() -> None:
    assert logged_kinds("all") is None
    assert logged_kinds(" ALL ") is None
    assert logged_kinds("none") == frozenset()
    assert logged_kinds("bounced, Deferred,expired,") == frozenset({"bounced", "deferred", "expired"})
    assert set(EVENT_KINDS) >= {"received", "queued", "routed", "attempted", "delivered", "bounced", "duplicate"}


@pytest.mark.parametrize(
    ("setting", "named"),
    [
        ("recieved", "'recieved' is not an event kind"),
        ("delivered,bounce", "'bounce' is not an event kind"),
        ("all,received", "'all' is not an event kind"),  # all and none stand alone
        ("\x1b[31m,\r\nx", r"'\x1b[31m', 'x' is not an event kind"),  # a hostile value is quoted, escaped
        ("", "empty"),
        (" , ", "empty"),
    ],
)
def test_anything_else_is_refused_naming_it(setting: str, named: str) -> None:
    with pytest.raises(ValueError, match="expected all, none, or a comma-separated list of received") as refused:
        logged_kinds(setting)
    assert str(refused.value).startswith(named)


def test_the_setting_is_checked_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBEMTA_LOG_EVENTS", "delivered,bounced")
    assert ServiceSettings.load().log_events == "delivered,bounced"
    monkeypatch.setenv("KUBEMTA_LOG_EVENTS", "deliverd")
    with pytest.raises(ConfigError, match="KUBEMTA_LOG_EVENTS: .*'deliverd' is not an event kind"):
        ServiceSettings.load()
    monkeypatch.delenv("KUBEMTA_LOG_EVENTS")
    assert ServiceSettings.load().log_events == "all"  # the default: every event is a log line


@given(st.text(max_size=60))
def test_any_value_is_a_set_of_known_kinds_or_refused(setting: str) -> None:
    try:
        kinds = logged_kinds(setting)
    except ValueError as refused:
        assert "expected all, none" in str(refused)
        assert "\r" not in str(refused) and "\n" not in str(refused).split(": expected")[0]
    else:
        assert kinds is None or kinds <= set(EVENT_KINDS)


@pytest.mark.parametrize(
    ("kinds", "lines"),
    [
        (None, ["received", "attempted", "delivered", "bounced"]),
        (frozenset({"delivered", "bounced"}), ["delivered", "bounced"]),
        (frozenset(), []),
    ],
)
def test_only_the_chosen_kinds_are_log_lines_and_every_event_is_buffered_for_the_stream(
    caplog: pytest.LogCaptureFixture, kinds: frozenset[str] | None, lines: list[str]
) -> None:
    log = offline_log(kinds)
    with caplog.at_level(logging.INFO, logger="kubemta.events"):
        for kind in ("received", "attempted", "delivered", "bounced"):
            log.emit(event(kind))
    assert [record.getMessage() for record in caplog.records if record.name == "kubemta.events"] == [
        f"event={kind}" for kind in lines
    ]
    assert log.buffered == 4
