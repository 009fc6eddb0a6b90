"""Every decision of replies.py pinned: which reply class delivers, defers or bounces (the edges of
each class), the enhanced status a DSN carries, the one-line diagnostic a sender reads, the reply
code kept on the result, and the metric words of the outcomes."""

import pytest

from kubemta.v1 import message_pb2
from kubemta_delivery_worker.metrics import ATTEMPT_RESULTS
from kubemta_delivery_worker.replies import (
    DIAGNOSTIC_LIMIT,
    enhanced_status,
    local_result,
    outcome_for,
    outcome_name,
    reply_diagnostic,
    reply_result,
)

DELIVERED = message_pb2.OUTCOME_DELIVERED
TEMPORARY = message_pb2.OUTCOME_TEMPORARY
PERMANENT = message_pb2.OUTCOME_PERMANENT


@pytest.mark.parametrize(
    ("code", "outcome"),
    [
        (199, TEMPORARY),
        (200, DELIVERED),
        (299, DELIVERED),
        (300, TEMPORARY),
        (354, TEMPORARY),
        (499, TEMPORARY),
        (500, PERMANENT),
        (599, PERMANENT),
        (600, TEMPORARY),
        (0, TEMPORARY),
    ],
)
def test_only_2xx_delivers_and_only_5xx_bounces(code, outcome):
    assert outcome_for(code) == outcome


def test_a_300_reply_is_not_counted_as_delivered():
    result = reply_result("a@dest.test", 300, "unexpected", "mx.dest.test")

    assert result.outcome == TEMPORARY
    assert result.status == "4.0.0"


def test_a_500_reply_bounces_instead_of_being_retried():
    result = reply_result("a@dest.test", 500, "5.5.2 Syntax error", "mx.dest.test")

    assert result.outcome == PERMANENT
    assert result.status == "5.5.2"


@pytest.mark.parametrize(
    ("code", "kept"),
    [(0, 0), (-1, 0), (1, 1), (250, 250), (999, 999), (1000, 0), (12345, 0)],
)
def test_reply_codes_outside_1_to_999_are_not_kept_on_the_result(code, kept):
    assert reply_result("a@dest.test", code, "text", "mx.dest.test").smtp_code == kept


def test_reply_result_carries_every_field_of_the_reply():
    result = reply_result("a@dest.test", 550, "5.1.1 No such user\nsee https://help", "mx.dest.test")

    assert result.recipient == "a@dest.test"
    assert result.outcome == PERMANENT
    assert result.smtp_code == 550
    assert result.status == "5.1.1"
    assert result.diagnostic == "550 5.1.1 No such user see https://help"
    assert result.remote_mta == "mx.dest.test"


def test_a_given_outcome_overrides_the_reply_code_and_sets_the_status_class():
    result = reply_result("a@dest.test", 250, "2.1.5 Ok", "mx.dest.test", outcome=TEMPORARY)

    assert result.outcome == TEMPORARY
    assert result.status == "4.1.5"
    assert result.smtp_code == 250
    assert result.diagnostic == "250 2.1.5 Ok"


@pytest.mark.parametrize(
    ("outcome", "text", "status"),
    [
        (DELIVERED, "2.1.5 Recipient ok", "2.1.5"),
        (DELIVERED, "Ok", "2.0.0"),
        (TEMPORARY, "4.2.2 Mailbox full", "4.2.2"),
        (TEMPORARY, "Try later", "4.0.0"),
        (PERMANENT, "5.7.26 Unauthenticated", "5.7.26"),
        (PERMANENT, "Rejected", "5.0.0"),
        (PERMANENT, "4.3.120 wrong class", "5.3.120"),
        (TEMPORARY, "5.1.1 wrong class", "4.1.1"),
        (DELIVERED, "  2.6.0 leading blanks", "2.6.0"),
        (TEMPORARY, "4.7.1", "4.7.1"),
        (TEMPORARY, "4.7.1\tgreylisted", "4.7.1"),
        (TEMPORARY, "4.7.1greylisted", "4.0.0"),
        (TEMPORARY, "3.7.1 no such class", "4.0.0"),
        (TEMPORARY, "4.1234.1 detail too long", "4.0.0"),
        (TEMPORARY, "4.1.1234 detail too long", "4.0.0"),
        (TEMPORARY, "x 4.1.1 not at the start", "4.0.0"),
    ],
)
def test_enhanced_status_read_from_the_reply_in_the_outcomes_class(outcome, text, status):
    assert enhanced_status(outcome, text) == status


@pytest.mark.parametrize(
    ("code", "text", "diagnostic"),
    [
        (550, "5.7.1 Rejected\r\n5.7.1 see https://x", "550 5.7.1 Rejected 5.7.1 see https://x"),
        (451, "  first  \n\n   \n  second ", "451 first second"),
        (421, "", "421"),
        (250, "\n", "250"),
        (550, "bad\x00byte", "550 bad\\x00byte"),
    ],
)
def test_the_diagnostic_is_one_clean_line_starting_with_the_code(code, text, diagnostic):
    assert reply_diagnostic(code, text) == diagnostic


def test_a_long_reply_is_cut_to_the_diagnostic_limit():
    exact = "x" * (DIAGNOSTIC_LIMIT - 4)
    longer = "x" * (DIAGNOSTIC_LIMIT - 3)

    assert DIAGNOSTIC_LIMIT == 500
    assert reply_diagnostic(550, exact) == f"550 {exact}"
    assert reply_diagnostic(550, longer) == f"550 {longer[:-1]}..."


def test_local_result_defaults_to_no_reply_code_and_no_remote_mta():
    result = local_result("a@dest.test", TEMPORARY, "4.4.1", "connection refused")

    assert result.recipient == "a@dest.test"
    assert result.outcome == TEMPORARY
    assert result.status == "4.4.1"
    assert result.diagnostic == "connection refused"
    assert result.smtp_code == 0
    assert result.remote_mta == ""


def test_local_result_keeps_a_given_code_and_remote_mta_and_cleans_the_diagnostic():
    long = "y" * (DIAGNOSTIC_LIMIT + 1)

    result = local_result("a@dest.test", PERMANENT, "5.3.4", long, smtp_code=552, remote_mta="mx.dest.test")

    assert (result.smtp_code, result.remote_mta) == (552, "mx.dest.test")
    assert result.diagnostic == "y" * DIAGNOSTIC_LIMIT + "..."
    assert local_result("a@b", PERMANENT, "5.0.0", "tab\there").diagnostic == "tab\\x09here"


@pytest.mark.parametrize(
    ("outcome", "name"),
    [
        (DELIVERED, "delivered"),
        (TEMPORARY, "deferred"),
        (PERMANENT, "bounced"),
        (message_pb2.OUTCOME_UNSPECIFIED, "deferred"),
    ],
)
def test_outcome_names_are_the_metric_labels(outcome, name):
    assert outcome_name(outcome) == name
    assert name in ATTEMPT_RESULTS
