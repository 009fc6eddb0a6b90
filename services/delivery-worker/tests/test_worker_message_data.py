"""The bytes after DATA: CRLF line endings, transparency dots, the end-of-data line (RFC 5321 §2.3.8, §4.5.2)."""

import pytest

from kubemta_delivery_worker.message_data import normalize_line_endings, wire_data


def test_crlf_content_is_passed_through_without_a_copy() -> None:
    content = b"Subject: x\r\n\r\nbody\r\n"
    assert normalize_line_endings(content) is content


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"a\nb\n", b"a\r\nb\r\n"),
        (b"a\rb", b"a\r\nb\r\n"),
        (b"a\r\nb\nc\r\n", b"a\r\nb\r\nc\r\n"),
        (b"no final newline", b"no final newline\r\n"),
        (b"", b"\r\n"),
    ],
)
def test_other_line_endings_become_crlf(content: bytes, expected: bytes) -> None:
    assert normalize_line_endings(content) == expected


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"plain\r\nlines\r\n", b"plain\r\nlines\r\n.\r\n"),
        (b".first\r\n", b"..first\r\n.\r\n"),
        (b"a\r\n.\r\nb\r\n", b"a\r\n..\r\nb\r\n.\r\n"),
        (b"a\r\n..x\r\n", b"a\r\n...x\r\n.\r\n"),
        (b"a.b\r\n", b"a.b\r\n.\r\n"),
    ],
)
def test_lines_starting_with_a_dot_get_another(content: bytes, expected: bytes) -> None:
    assert wire_data(content) == expected
