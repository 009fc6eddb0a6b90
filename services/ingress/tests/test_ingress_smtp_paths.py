"""The fast path reader agrees with aiosmtpd's parser on every argument it reads."""

import asyncio

import pytest
from aiosmtpd.smtp import SMTP
from hypothesis import given, settings
from hypothesis import strategies as st

from kubemta_ingress.smtp_paths import plain_path

ALPHABET = "aZ09.-_+=@<> ()\"\\[]:;,!#%'`{}~\t"


@pytest.fixture(scope="module")
def reference() -> SMTP:
    async def build() -> SMTP:
        return SMTP(object())

    return asyncio.run(build())


@pytest.mark.parametrize(
    ("arg", "expected"),
    [
        ("<alice@example.com>", ("alice@example.com", "")),
        (
            "<Alice.Smith+tag@Mail.Example-1.COM> SIZE=1024 BODY=8BITMIME",
            ("Alice.Smith+tag@Mail.Example-1.COM", "SIZE=1024 BODY=8BITMIME"),
        ),
        ("<a@b>  SMTPUTF8", ("a@b", "SMTPUTF8")),
    ],
)
def test_plain_paths_are_read(arg: str, expected: tuple[str, str], reference: SMTP) -> None:
    assert plain_path(arg) == expected
    assert reference._getaddr(arg) == expected


@pytest.mark.parametrize(
    "arg",
    [
        "<>",
        '<"a b"@example.com>',
        "<a@[192.0.2.1]>",
        "<@relay.example:a@example.com>",
        "<a@example.com> (comment)",
        "<a.@example.com>",
        "<a@example.com.>",
        "<a@-example.com>",
        "a@example.com",
        "<a@exämple.com>",
        "<a@example.com>x",
    ],
)
def test_anything_else_goes_to_the_full_parser(arg: str) -> None:
    assert plain_path(arg) is None


@settings(max_examples=3000, deadline=None)
@given(st.text(alphabet=ALPHABET, max_size=40))
def test_agrees_with_aiosmtpd_wherever_it_answers(reference: SMTP, text: str) -> None:
    for arg in (text, f"<{text}>", f"<{text}@example.com>", f"<a@example.com>{text}", f"<{text}> SIZE=1"):
        fast = plain_path(arg)
        if fast is not None:
            assert fast == reference._getaddr(arg), arg
