"""`has_long_line`: a line over 1000 octets with its CRLF (RFC 5321 section 4.5.3.1.6) is found wherever it is.

The check searches window by window instead of splitting the message into lines; it must answer as the split
did for any bytes, bare CRs and LFs included (a bare LF does not end a line here: lines are CRLF-separated)."""

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from kubemta_ingress.content import CRLF, MAX_TEXT_LINE, ContentProblem, content_problem, has_long_line


def split_answer(content: bytes, limit: int) -> bool:
    """The reference: split into CRLF-separated lines and measure the longest (the check's first form)."""
    return max(map(len, content.split(CRLF))) + len(CRLF) > limit


def lines(*lengths: int) -> bytes:
    """CRLF-terminated lines of these lengths, CRLF not counted."""
    return b"".join(b"x" * length + CRLF for length in lengths)


@pytest.mark.parametrize(
    ("content", "too_long"),
    [
        (b"", False),
        (lines(998), False),  # 998 + CRLF = 1000: the longest line allowed
        (lines(999), True),
        (lines(10, 998, 5), False),
        (lines(10, 999, 5), True),
        (lines(*[76] * 140), False),  # a 10 KiB message of ordinary lines
        (lines(*[76] * 140) + lines(999), True),  # the long line last
        (lines(999) + lines(*[76] * 140), True),  # and first
        (b"x" * 998, False),  # a last line without CRLF, counted as if it had one
        (b"x" * 999, True),
        (lines(500, 998), False),  # the second window starts after the first line's CRLF
        (lines(500, 999), True),
        (b"x" * 999 + CRLF + lines(5), True),  # the CRLF straddling the first window's end
        (b"x" * 5000 + b"\n" + b"x" * 10 + CRLF, True),  # a bare LF ends no line
        (lines(500) + b"\r" * 1000 + CRLF, True),  # bare CRs are octets of the line
        (lines(500) + b"\r" * 600 + CRLF, False),
    ],
)
def test_the_longest_allowed_line_is_1000_octets_with_its_crlf(content: bytes, too_long: bool) -> None:
    assert has_long_line(content) is too_long
    assert split_answer(content, MAX_TEXT_LINE) is too_long


line_bytes = st.lists(st.sampled_from([b"x", b"\r", b"\n", CRLF, b"." + CRLF]), max_size=200).map(b"".join)


@settings(max_examples=500, deadline=None)
@given(content=line_bytes, limit=st.integers(min_value=2, max_value=40))
@example(content=b"xx\r\nx", limit=4)
@example(content=b"xx\r", limit=4)
@example(content=b"\r\n", limit=2)
def test_the_window_search_answers_as_splitting_into_lines(content: bytes, limit: int) -> None:
    assert has_long_line(content, limit) == split_answer(content, limit)


@settings(max_examples=200, deadline=None)
@given(lengths=st.lists(st.integers(min_value=0, max_value=1200), max_size=30), tail=st.binary(max_size=1100))
def test_real_sized_lines_answer_as_splitting(lengths: list[int], tail: bytes) -> None:
    content = lines(*lengths) + tail
    assert has_long_line(content) == split_answer(content, MAX_TEXT_LINE)


def test_a_long_line_is_a_content_problem() -> None:
    assert content_problem(lines(76, 999)) is ContentProblem.LINE_TOO_LONG
    assert content_problem(lines(76, 998)) is None
