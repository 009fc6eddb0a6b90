"""Header classes made once per kind (header_classes.py), and composing a message in time linear in its fields.

CPython's HeaderRegistry made a class for every header; `compose` read every field again for each field it added,
so a request with 1,000 recipients and 50 extra non-ASCII headers held the event loop for 10 s.
"""

import email.errors
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from email.headerregistry import AddressHeader, HeaderRegistry
from email.message import EmailMessage
from email.policy import default
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from kubemta_ingress import api_message
from kubemta_ingress.api_message import compose
from kubemta_ingress.api_message_model import MAX_HEADERS, Mailbox, parse_request
from kubemta_ingress.header_classes import READER, OnceHeaderRegistry

NOW = datetime(2026, 12, 6, 10, 0, tzinfo=UTC)
KNOWN_NAMES = sorted(HeaderRegistry().registry)
HEADER_ERRORS = (ValueError, TypeError, IndexError, AttributeError, email.errors.HeaderParseError)


def test_each_kind_of_header_gets_one_class() -> None:
    registry = OnceHeaderRegistry()
    assert registry["To"] is registry["to"] is registry["CC"] is registry["From"]  # a unique address field
    assert registry["Comments"] is registry["X-Anything"]  # unstructured
    assert registry["Subject"] is not registry["X-Anything"]  # unique unstructured
    assert registry["Resent-To"] is not registry["To"]  # an address field that may repeat
    assert registry["Date"] is not registry["Subject"]
    stock = HeaderRegistry()
    assert stock["To"] is not stock["To"]  # what it replaces: a new class each time
    assert registry["To"].__bases__ == stock["To"].__bases__


def test_hostile_header_names_never_grow_the_cache() -> None:
    registry = OnceHeaderRegistry()
    for index in range(2000):
        registry[f"X-Hostile-{index}-\u00e9"](f"X-Hostile-{index}", "value")
    for name in KNOWN_NAMES:
        registry[name]
    assert registry.kinds_made <= len(set(registry.registry.values())) + 1


def _made(factory: Callable[[str, str], Any], name: str, value: str) -> tuple[Any, ...]:
    try:
        header = factory(name, value)
    except HEADER_ERRORS as exc:
        return ("raised", type(exc))
    try:
        folded: Any = header.fold(policy=default)
    except HEADER_ERRORS as exc:
        folded = ("raised", type(exc))
    return (
        str(header),
        header.name,
        [type(base) for base in type(header).__mro__[1:]],
        [type(defect) for defect in header.defects],
        folded,
    )


@settings(max_examples=300, deadline=None)
@given(
    name=st.one_of(st.sampled_from(KNOWN_NAMES), st.from_regex(r"\A[!-9;-~]{1,20}\Z")),
    value=st.one_of(
        st.text(max_size=80),
        st.sampled_from(
            [
                "Bob <bob@example.org>, =?utf-8?q?x=0D=0ABcc:_y?= <y@example.net>",
                "Mon, 1 Jan 2024 12:00:00 +0000",
                "undisclosed-recipients:;",
                '"B\\"ob" <b@[192.0.2.1]>',
                "=?utf-8?b?w6k=?=",
            ]
        ),
    ),
)
def test_the_headers_it_makes_are_the_stock_ones(name: str, value: str) -> None:
    assert _made(READER.header_factory, name, value) == _made(default.header_factory, name, value)


@pytest.fixture
def address_parses(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every address-list text the email package parses while the test runs."""
    seen: list[str] = []
    parse = AddressHeader.value_parser

    def counting(value: str) -> Any:
        seen.append(value)
        return parse(value)

    monkeypatch.setattr(AddressHeader, "value_parser", staticmethod(counting))
    yield seen


def _request(recipients: int, extra_headers: int) -> dict[str, Any]:
    return {
        "from": {"address": "app@example.com", "name": "The Äpp"},
        "to": [{"address": f"user{index}@example.net", "name": f"Üser {index}"} for index in range(recipients)],
        "subject": "Grüße",
        "text": "Hello\n",
        "headers": {f"X-Note-{index}": "välue" for index in range(extra_headers)},
    }


def _compose(body: dict[str, Any]) -> bytes:
    request = parse_request(json.dumps(body), max_recipients=1000)
    return compose(request, now=NOW, message_id="<Q1@mta.example>").content


def test_adding_fields_does_not_read_the_address_fields_again(address_parses: list[str]) -> None:
    _compose(_request(3, 0))
    without_extra = len(address_parses)
    address_parses.clear()
    _compose(_request(3, MAX_HEADERS - 1))
    assert len(address_parses) == without_extra == 2 * (1 + 3)  # each mailbox: written once, read back once


def test_composing_again_makes_no_header_class(monkeypatch: pytest.MonkeyPatch) -> None:
    _compose(_request(2, 2))
    made: list[str] = []
    stock = HeaderRegistry.__getitem__

    def counting(self: HeaderRegistry, name: str) -> Any:
        made.append(name)
        return stock(self, name)

    monkeypatch.setattr(HeaderRegistry, "__getitem__", counting)
    content = _compose(_request(2, 2))
    assert made == []
    assert (
        b"To: =?utf-8?q?=C3=9Cser?= 0 <user0@example.net>,\r\n =?utf-8?q?=C3=9Cser?= 1 <user1@example.net>\r\n"
        in content
    )


ATOM = st.text(alphabet="abcXYZ019_+-", min_size=1, max_size=30)
plain_addresses = st.builds(
    lambda local, domain: f"{'.'.join(local)}@{'.'.join(domain)}",
    st.lists(ATOM, min_size=1, max_size=3),
    st.lists(st.from_regex(r"\A[a-z0-9](?:[a-z0-9-]{0,18}[a-z0-9])?\Z"), min_size=2, max_size=4),
)
NOT_PLAIN = ["=?utf-8?q?x?=@example.com", '"a b"@example.com', "a@[192.0.2.1]", "üser@example.com"]


def _written(monkeypatch: pytest.MonkeyPatch, address: str, *, plain_path: bool) -> list[tuple[str, Any]]:
    """The To: field `_set_addresses` writes for `address`, through the fast path or (patched off) the package's."""
    with monkeypatch.context() as patch:
        if not plain_path:
            patch.setattr(api_message, "_plain", lambda policy, name, mailbox: False)
        message = EmailMessage(policy=api_message.POLICY_UTF8)
        api_message._set_addresses(message, api_message.POLICY_UTF8, "to", "To", [Mailbox(address=address)])
        return list(message.raw_items())


@settings(max_examples=300, deadline=None)
@given(plain_addresses)
def test_a_plain_address_is_written_as_the_email_package_writes_it(address: str) -> None:
    try:
        Mailbox(address=address)
    except ValidationError:
        assume(False)  # the request model refuses it: it never reaches compose
    with pytest.MonkeyPatch.context() as monkeypatch:
        fast = _written(monkeypatch, address, plain_path=True)
        slow = _written(monkeypatch, address, plain_path=False)
    assert fast == slow
    assert api_message._plain(api_message.POLICY, "To", Mailbox(address=address)) == (len(address) + 4 <= 78)


@pytest.mark.parametrize("address", NOT_PLAIN)
def test_anything_but_a_plain_address_takes_the_email_packages_way(address: str) -> None:
    assert not api_message._plain(api_message.POLICY, "To", Mailbox(address=address))


def test_a_named_or_long_mailbox_takes_the_email_packages_way() -> None:
    assert api_message._plain(api_message.POLICY, "To", Mailbox(address="bob@example.org"))
    assert api_message._plain(api_message.POLICY, "To", Mailbox(address="a.b+tag_1@mail-2.example.org"))
    assert not api_message._plain(api_message.POLICY, "To", Mailbox(address="bob@example.org", name="Bob"))
    long_address = "a" * 64 + "@" + "b" * 10 + ".example"
    assert not api_message._plain(api_message.POLICY, "To", Mailbox(address=long_address))
