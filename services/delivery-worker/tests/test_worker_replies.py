"""Reply mapping and wire encoding of the message data."""

from kubemta.v1 import message_pb2
from kubemta_delivery_worker import message_data
from kubemta_delivery_worker.replies import enhanced_status, outcome_for, reply_diagnostic, reply_result


def test_outcome_by_reply_class():
    assert outcome_for(250) == message_pb2.OUTCOME_DELIVERED
    assert outcome_for(251) == message_pb2.OUTCOME_DELIVERED
    assert outcome_for(421) == message_pb2.OUTCOME_TEMPORARY
    assert outcome_for(554) == message_pb2.OUTCOME_PERMANENT
    assert outcome_for(-1) == message_pb2.OUTCOME_TEMPORARY


def test_enhanced_status_from_text_or_derived():
    assert enhanced_status(message_pb2.OUTCOME_PERMANENT, "5.1.1 No such user") == "5.1.1"
    assert enhanced_status(message_pb2.OUTCOME_PERMANENT, "No such user") == "5.0.0"
    assert enhanced_status(message_pb2.OUTCOME_TEMPORARY, "4.7.1 greylisted") == "4.7.1"
    # the reply code decides the class even when the text disagrees
    assert enhanced_status(message_pb2.OUTCOME_PERMANENT, "4.2.0 busy") == "5.2.0"
    assert enhanced_status(message_pb2.OUTCOME_DELIVERED, "2.0.0 Ok: queued as X") == "2.0.0"
    assert enhanced_status(message_pb2.OUTCOME_DELIVERED, "5.1.10garbage") == "2.0.0"


def test_multiline_reply_becomes_one_line():
    assert reply_diagnostic(550, "5.7.1 Rejected\n5.7.1 see https://x") == "550 5.7.1 Rejected 5.7.1 see https://x"


def test_reply_result_fields():
    result = reply_result("a@b", 452, "4.2.2 Mailbox full", "mx.b")
    assert (result.outcome, result.smtp_code, result.status) == (message_pb2.OUTCOME_TEMPORARY, 452, "4.2.2")
    assert (result.diagnostic, result.remote_mta) == ("452 4.2.2 Mailbox full", "mx.b")


def test_wire_data_stuffs_dots_and_terminates():
    assert message_data.wire_data(b".a\r\nb\r\n.\r\n") == b"..a\r\nb\r\n..\r\n.\r\n"


def test_line_endings_are_normalised():
    assert message_data.normalize_line_endings(b"a\nb\rc\r\nd") == b"a\r\nb\r\nc\r\nd\r\n"


def test_8bit_detection():
    assert message_data.has_8bit(b"caf\xc3\xa9")
    assert not message_data.has_8bit(b"plain")
