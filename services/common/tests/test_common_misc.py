"""Queue ids, provider labels, JSON logs, bus decoding."""

import itertools
import json
import logging
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kubemta.v1 import message_pb2
from kubemta_common.amqp.topology import retry_queue_name
from kubemta_common.bus_messages import decode
from kubemta_common.errors import PermanentError
from kubemta_common.logs import JsonFormatter, sanitize
from kubemta_common.providers import provider_for_hosts, provider_label
from kubemta_common.queue_id import new_queue_id


def test_queue_ids_are_unique_and_ordered_by_time() -> None:
    ids = [new_queue_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 16 and i.isalnum() for i in ids)
    batches = []  # ids made a few milliseconds apart sort in the order they were made
    for _ in range(5):
        batches.append([new_queue_id() for _ in range(20)])
        time.sleep(0.003)
    for earlier, later in itertools.pairwise(batches):
        assert max(earlier) < min(later)


@pytest.mark.parametrize(
    ("hosts", "provider"),
    [
        (["gmail-smtp-in.l.google.com."], "google"),
        (["example-com.mail.protection.outlook.com"], "microsoft"),
        (["mta5.am0.yahoodns.net"], "yahoo"),
        (["mx01.mail.icloud.com"], "apple"),
        (["mx.example.org", "alt.google.com"], "google"),
        (["notgoogle.com"], "other"),
        ([], "other"),
    ],
)
def test_provider_from_mx_hosts(hosts: list[str], provider: str) -> None:
    assert provider_for_hosts(hosts) == provider


def test_provider_label_is_bounded() -> None:
    assert provider_label("google") == "google"
    assert provider_label("gmail.com") == "other"
    assert provider_label("") == "other"


def test_json_log_line_carries_queue_id() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "queued %s", ("msg",), None)
    record.queue_id = "ABC123"
    entry = json.loads(JsonFormatter("ingress").format(record))
    assert entry["queue_id"] == "ABC123"
    assert entry["service"] == "ingress"
    assert entry["message"] == "queued msg"


def test_sanitize_makes_client_text_printable() -> None:
    assert sanitize("evil\r\nline\x00") == "evil\\x0d\\x0aline\\x00"
    assert sanitize("a" * 500).endswith("...")


def sanitized_char_by_char(text: str | bytes, limit: int) -> str:
    """sanitize as it was before it skipped printable text (every character looked at)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    cleaned = "".join(ch if ch.isprintable() else f"\\x{ord(ch):02x}" for ch in text)
    return cleaned if len(cleaned) <= limit else cleaned[:limit] + "..."


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=300) | st.binary(max_size=300), limit=st.integers(min_value=0, max_value=250))
def test_sanitize_of_printable_text_is_what_escaping_each_character_gives(text: str | bytes, limit: int) -> None:
    assert sanitize(text, limit) == sanitized_char_by_char(text, limit)


def test_decode_refuses_garbage_as_permanent() -> None:
    message = message_pb2.AcceptedMessage(queue_id="Q", sender="a@b")
    assert decode(message_pb2.AcceptedMessage, message.SerializeToString()).queue_id == "Q"
    with pytest.raises(PermanentError):
        decode(message_pb2.AcceptedMessage, b"\xff\xff\xff garbage")


def test_retry_queue_names() -> None:
    assert retry_queue_name(300) == "retry.5m"
    assert retry_queue_name(1) == "retry.1s"
