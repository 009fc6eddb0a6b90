"""message_id.py and dedup_key.py: the Message-ID as received (bounded, hostile values) and the key that
recognises a client's retry."""

from hypothesis import given
from hypothesis import strategies as st

from kubemta_ingress.dedup_key import dedup_key
from kubemta_ingress.message_id import MAX_EVENT_HEADERS, MAX_MESSAGE_ID, event_headers, header_block, message_id


def test_message_id_as_written():
    content = b"From: a@example.net\r\nMessage-ID: <abc.123@example.net>\r\nSubject: x\r\n\r\nbody\r\n"
    assert message_id(content) == "<abc.123@example.net>"


def test_field_name_is_case_insensitive_and_may_have_space_before_the_colon():
    assert message_id(b"message-id: <a@b>\r\n\r\n") == "<a@b>"
    assert message_id(b"MESSAGE-ID \t: <a@b>\r\n\r\n") == "<a@b>"


def test_folded_value_is_unfolded():
    content = b"Message-ID:\r\n <folded@example.net>\r\nSubject: x\r\n\r\n"
    assert message_id(content) == "<folded@example.net>"
    content = b"Message-ID: <a\r\n\tb@example.net>\r\n\r\n"
    assert message_id(content) == "<a\tb@example.net>"


def test_only_the_first_occurrence_counts():
    content = b"Message-ID: <first@x>\r\nMessage-ID: <second@x>\r\n\r\n"
    assert message_id(content) == "<first@x>"


def test_a_message_id_in_the_body_is_not_read():
    assert message_id(b"Subject: x\r\n\r\nMessage-ID: <in-body@x>\r\n") == ""
    assert message_id(b"\r\nMessage-ID: <no-headers@x>\r\n") == ""


def test_a_continuation_line_is_not_a_field():
    content = b"Subject: x\r\n Message-ID: <continued@x>\r\n\r\n"
    assert message_id(content) == ""


def test_other_fields_with_the_same_prefix_do_not_count():
    content = b"Message-IDs: <no@x>\r\nX-Message-ID: <no@x>\r\nResent-Message-ID: <no@x>\r\n\r\n"
    assert message_id(content) == ""


def test_no_message_id():
    assert message_id(b"Subject: x\r\n\r\nbody\r\n") == ""
    assert message_id(b"") == ""


def test_hostile_values_are_bounded_and_single_line():
    assert message_id(b"Message-ID: <a\0b@x>\r\n\r\n") == "<ab@x>"
    assert message_id(b"Message-ID: <a\rb\nc@x>\r\n\r\n") == "<abc@x>"
    long = message_id(b"Message-ID: <" + b"a" * 100_000 + b"@x>\r\n\r\n")
    assert len(long) == MAX_MESSAGE_ID
    folded = message_id(b"Message-ID: <x\r\n" + b" a\r\n" * 50_000 + b"\r\n")
    assert len(folded) <= MAX_MESSAGE_ID
    assert message_id(b"Message-ID: <\xff\xfe@x>\r\n\r\n") == "<\ufffd\ufffd@x>"


def test_header_block_and_event_headers():
    assert header_block(b"A: 1\r\nB: 2\r\n\r\nbody") == b"A: 1\r\nB: 2\r\n"
    assert header_block(b"A: 1\r\n") == b"A: 1\r\n"
    assert header_block(b"\r\nbody") == b""
    huge = b"X: " + b"a" * (2 * MAX_EVENT_HEADERS) + b"\r\n\r\nbody"
    assert len(event_headers(huge)) == MAX_EVENT_HEADERS
    assert event_headers(b"A: 1\r\n\r\nbody") == b"A: 1\r\n"


@given(st.binary(max_size=4000))
def test_any_bytes_give_a_bounded_clean_value(content: bytes):
    value = message_id(content)
    assert len(value) <= MAX_MESSAGE_ID
    assert not {"\r", "\n", "\0"} & set(value)
    value.encode("utf-8")  # valid for a protobuf string


@given(st.text(alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\r\n\0"), max_size=1200))
def test_a_single_line_value_is_kept_as_written_up_to_the_bound(value: str):
    content = b"Message-ID: " + value.encode("utf-8") + b"\r\nSubject: s\r\n\r\nbody\r\n"
    assert message_id(content) == value.strip(" \t")[:MAX_MESSAGE_ID]


def test_dedup_key_is_stable_and_covers_every_field():
    base = ("<m@x>", "a@example.net", ["b@example.org", "c@example.org"], b"body\r\n")
    key = dedup_key(*base)
    assert key == dedup_key(*base)
    assert len(key) == 64 and int(key, 16) >= 0
    variants = [
        ("<n@x>", base[1], base[2], base[3]),
        (base[0], "z@example.net", base[2], base[3]),
        (base[0], base[1], ["c@example.org", "b@example.org"], base[3]),
        (base[0], base[1], ["b@example.org"], base[3]),
        (base[0], base[1], base[2], b"body2\r\n"),
        (base[0], "", base[2], base[3]),
    ]
    assert len({dedup_key(*variant) for variant in variants} | {key}) == len(variants) + 1


def test_dedup_key_fields_cannot_run_into_each_other():
    assert dedup_key("<m>", "ab", ["c"], b"") != dedup_key("<m>", "a", ["bc"], b"")
    assert dedup_key("<m>", "a", ["b", "c"], b"") != dedup_key("<m>", "a", ["b"], b"c")
    assert dedup_key("<m>", "a", ["bc"], b"") != dedup_key("<m>", "a", ["b", "c"], b"")


def test_no_message_id_no_key():
    assert dedup_key("", "a@x", ["b@y"], b"body") == ""


_field = st.text(max_size=8)


@given(
    st.tuples(_field.filter(bool), _field, st.lists(_field, max_size=3), st.binary(max_size=8)),
    st.tuples(_field.filter(bool), _field, st.lists(_field, max_size=3), st.binary(max_size=8)),
)
def test_different_inputs_give_different_keys(one, other):
    if one != other:
        assert dedup_key(*one) != dedup_key(*other)
