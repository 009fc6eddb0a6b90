"""The per-request text checks, done by one regular expression each: the same answers as the character-by-character
versions they replaced (reference implementations below), for every code point class that matters."""

import unicodedata

from hypothesis import example, given, settings
from hypothesis import strategies as st

from kubemta_ingress.api_message_fields import check_body_text, header_text_problem
from kubemta_ingress.received import safe_helo

EDGES = "\t\n\r\x00\x1f\x20\x7e\x7f\x80\x85\x9f\xa0\u061c\u200e\u2028\u2029\ud800\udbff\udc00\udfff\ufeff\U0001f600"
TEXT = st.text(alphabet=st.one_of(st.characters(codec=None), st.sampled_from(EDGES)), max_size=60)


def header_text_problem_by_character(value: str) -> str | None:
    for ch in value:
        category = unicodedata.category(ch)
        if (category == "Cc" and ch != "\t") or ch in "\u2028\u2029":
            return f"holds the control character U+{ord(ch):04X}; header text may hold no CR, LF, NUL or other control"
        if category == "Cs":
            return f"holds the lone surrogate U+{ord(ch):04X}"
    return None


def body_text_problem_by_character(value: str) -> str | None:
    if "\0" in value:
        return "may not hold NUL (U+0000)"
    if any(unicodedata.category(ch) == "Cs" for ch in value):
        return "holds a lone surrogate: not valid Unicode"
    return None


def safe_helo_by_character(helo: str | None) -> str:
    if not helo:
        return "unknown"
    return "".join(ch if "!" <= ch <= "~" and ch not in "()\\" else "?" for ch in helo)


def _body_text_problem(value: str) -> str | None:
    try:
        check_body_text(value)
    except ValueError as exc:
        return str(exc)
    return None


@settings(max_examples=500)
@given(TEXT)
@example("Subject\u2028Bcc: x")
@example("ok\tok")
@example("a\x85b")
@example("\ud800")
def test_header_text_problem_matches_the_character_by_character_check(value: str) -> None:
    assert header_text_problem(value) == header_text_problem_by_character(value)


@settings(max_examples=500)
@given(TEXT)
@example("x\ud800\x00")
def test_body_text_check_matches_the_character_by_character_check(value: str) -> None:
    assert _body_text_problem(value) == body_text_problem_by_character(value)


@settings(max_examples=500)
@given(st.one_of(st.none(), TEXT))
@example("mail(evil)\\.example")
def test_safe_helo_matches_the_character_by_character_version(helo: str | None) -> None:
    assert safe_helo(helo) == safe_helo_by_character(helo)


def test_every_code_point_of_the_ranges_that_matter_is_classed_as_before() -> None:
    ranges = (range(0x0, 0x3000), range(0xD700, 0xE100), range(0xFFF0, 0x10000), range(0x10FFF0, 0x110000))
    for code in (code for each in ranges for code in each):
        ch = chr(code)
        assert header_text_problem(f"a{ch}b") == header_text_problem_by_character(f"a{ch}b"), hex(code)
        assert _body_text_problem(ch) == body_text_problem_by_character(ch), hex(code)
        assert safe_helo(ch) == safe_helo_by_character(ch), hex(code)
