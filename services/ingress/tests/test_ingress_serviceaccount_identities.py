"""The ServiceAccount identities file (NAMESPACE/NAME:IDENTITY,...), its reloads, and the JWT shape look."""

import base64
import json
import logging
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kubemta_common.errors import ConfigError
from kubemta_ingress.jwt_shape import MAX_JWT_LENGTH, jwt_shaped, unverified_expiry
from kubemta_ingress.serviceaccount_identities import (
    IdentitiesFileError,
    ServiceAccount,
    ServiceAccountIdentitiesFile,
    parse_identity_map,
    valid_name,
    valid_namespace,
)
from kubemta_ingress.users import Identity

FILE = """\
# apps that may send
apps/mailer: mailer@example.com, example.org
apps/*: noreply@example.com

billing/invoices.v2:@invoices.example.com
"""


def test_entries_and_wildcards():
    parsed = parse_identity_map(FILE)
    assert parsed.identities(ServiceAccount("apps", "mailer")) == (
        Identity.parse("mailer@example.com"),
        Identity.parse("example.org"),
    )  # its own line wins over apps/*
    assert parsed.identities(ServiceAccount("apps", "other")) == (Identity.parse("noreply@example.com"),)
    assert parsed.identities(ServiceAccount("billing", "invoices.v2")) == (Identity.parse("invoices.example.com"),)
    assert parsed.identities(ServiceAccount("billing", "other")) is None
    assert parsed.identities(ServiceAccount("default", "mailer")) is None
    assert len(parsed) == 3


@pytest.mark.parametrize(
    "line",
    [
        "apps/mailer",  # no identities
        "apps/mailer:",  # empty list
        "apps/mailer: ,",
        "apps:mailer@example.com",  # no slash
        "Apps/mailer:a@example.com",  # upper case namespace
        "apps/Mailer:a@example.com",
        "-apps/mailer:a@example.com",
        "apps-/mailer:a@example.com",
        "a.b/mailer:a@example.com",  # a namespace is a label, no dots
        f"{'a' * 64}/mailer:a@example.com",
        f"apps/{'a' * 254}:a@example.com",
        "apps/mail..er:a@example.com",
        "apps/mailer/x:a@example.com",
        "apps/*x:a@example.com",
        "*/mailer:a@example.com",
        "apps/mailer:not an address@",
        "apps/mailer:a@exa mple.com",
        "apps/mail\x00er:a@example.com",
        "/mailer:a@example.com",
        "apps/:a@example.com",
    ],
)
def test_bad_lines_are_refused_with_their_number(line):
    with pytest.raises(IdentitiesFileError, match="line 2"):
        parse_identity_map(f"# ok\n{line}\n")


def test_duplicates_are_refused():
    with pytest.raises(IdentitiesFileError, match="duplicate entry apps/mailer"):
        parse_identity_map("apps/mailer:a@example.com\napps/mailer:b@example.com\n")
    with pytest.raises(IdentitiesFileError, match=r"duplicate entry apps/\*"):
        parse_identity_map("apps/*:a@example.com\napps/*:b@example.com\n")


def test_kubernetes_name_rules():
    assert valid_namespace("a") and valid_namespace("kube-system") and valid_namespace("a" * 63)
    assert not valid_namespace("a" * 64) and not valid_namespace("a.b") and not valid_namespace("")
    assert valid_name("a.b-c.d") and valid_name(".".join(["a" * 63] * 3) + "." + "b" * 61)
    assert not valid_name("a" * 254) and not valid_name("a_b") and not valid_name("a.") and not valid_name(".a")


@pytest.mark.parametrize(
    ("login", "expected"),
    [
        ("apps/mailer", ServiceAccount("apps", "mailer")),
        ("system:serviceaccount:apps:mailer", ServiceAccount("apps", "mailer")),
        ("system:serviceaccount:apps:mail.er", ServiceAccount("apps", "mail.er")),
        ("system:serviceaccount:apps", None),
        ("system:serviceaccount:apps:mailer:x", None),
        ("system:serviceaccounts:apps", None),
        ("system:node:worker-1", None),
        ("apps/mailer/x", None),
        ("apps/*", None),
        ("app", None),
        ("APPS/mailer", None),
        ("apps/mailer\r\n", None),
        ("", None),
    ],
)
def test_logins(login, expected):
    assert ServiceAccount.from_login(login) == expected


def test_username_round_trip():
    account = ServiceAccount("apps", "mailer")
    assert account.username == "system:serviceaccount:apps:mailer"
    assert ServiceAccount.from_username(account.username) == account
    assert str(account) == "apps/mailer"


_label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_parser_never_fails_other_than_by_its_error(text):
    try:
        parsed = parse_identity_map(text)
    except IdentitiesFileError as exc:
        assert "\x00" not in str(exc) and "\n" not in str(exc)  # control characters are sanitised away
        return
    for account in parsed.accounts:
        assert valid_namespace(account.namespace) and valid_name(account.name)


@settings(max_examples=100, deadline=None)
@given(
    st.dictionaries(
        st.tuples(_label, st.one_of(st.just("*"), _label)),
        st.lists(st.sampled_from(["a@example.com", "example.org", "@x.example.net"]), min_size=1, max_size=3),
        max_size=8,
    )
)
def test_written_entries_parse_back(entries):
    text = "\n".join(f"{ns}/{name}:{','.join(identities)}" for (ns, name), identities in entries.items())
    parsed = parse_identity_map(text)
    for (namespace, name), identities in entries.items():
        expected = tuple(Identity.parse(item) for item in identities)
        if name == "*":
            assert parsed.namespaces[namespace] == expected
        else:
            assert parsed.accounts[ServiceAccount(namespace, name)] == expected


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_file_reload_keeps_the_last_good_version(tmp_path, caplog):
    path = tmp_path / "identities"
    path.write_text("apps/mailer:a@example.com\n")
    clock = Clock()
    identities = ServiceAccountIdentitiesFile(path, check_interval=2.0, clock=clock)
    mailer, other = ServiceAccount("apps", "mailer"), ServiceAccount("apps", "other")
    assert identities.identities(mailer) == (Identity.parse("a@example.com"),)

    path.write_text("apps/*:b@example.com\n")
    os.utime(path, ns=(1, 1))  # a new stamp even within the file system's time resolution
    assert identities.identities(other) is None  # not looked at before check_interval
    clock.now += 2.0
    assert identities.identities(other) == (Identity.parse("b@example.com"),)
    assert identities.identities(mailer) == (Identity.parse("b@example.com"),)

    path.write_text("apps/mailer:broken@\n")
    os.utime(path, ns=(2, 2))
    clock.now += 2.0
    with caplog.at_level(logging.ERROR):
        assert identities.identities(other) == (Identity.parse("b@example.com"),)
        clock.now += 2.0
        assert identities.identities(other) == (Identity.parse("b@example.com"),)
    assert len([r for r in caplog.records if "keeping the previous version" in r.getMessage()]) == 1

    path.unlink()
    clock.now += 2.0
    assert identities.identities(other) == (Identity.parse("b@example.com"),)  # a vanished file changes nothing

    path.write_text("apps/other:c@example.com\n")
    clock.now += 2.0
    assert identities.identities(other) == (Identity.parse("c@example.com"),)
    assert identities.identities(mailer) is None


def test_file_missing_or_broken_at_start_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="KUBEMTA_SERVICEACCOUNT_IDENTITIES_FILE"):
        ServiceAccountIdentitiesFile(tmp_path / "absent")
    broken = tmp_path / "broken"
    broken.write_bytes(b"apps/mailer:\xff@example.com\n")
    with pytest.raises(ConfigError):
        ServiceAccountIdentitiesFile(broken)


# -- the JWT shape ------------------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt(claims: object) -> str:
    return f"{_b64(b'{}')}.{_b64(json.dumps(claims).encode())}.{_b64(b'signature')}"


def test_jwt_shape_and_expiry():
    assert jwt_shaped(jwt({"exp": 5})) and unverified_expiry(jwt({"exp": 5})) == 5.0
    assert unverified_expiry(jwt({"exp": 5.5})) == 5.5
    for claims in ({}, {"exp": "5"}, {"exp": True}, {"exp": None}, [1], "x", {"exp": 1e400}):
        assert unverified_expiry(jwt(claims)) is None
    assert unverified_expiry("ab.!!.cd") is None
    assert unverified_expiry("ab.abc.cd") is None  # not JSON


@pytest.mark.parametrize(
    "token",
    [
        "",
        "abc",
        "a.b.c",  # parts of one character are no base64 of anything
        "ab.cd",
        "ab.cd.ef.gh",
        "ab.cd.",
        "ab.c d.ef",
        "ab.cd.ef=",
        "ab.cd.ef\n",
        "ab.c+d.ef",
        "ab.cd.e\x00f",
        "ab.cd.éf",
        "ab." + "c" * MAX_JWT_LENGTH + ".ef",
    ],
)
def test_not_jwt_shaped(token):
    assert not jwt_shaped(token)
    assert unverified_expiry(token) is None


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_expiry_of_anything_never_raises(text):
    value = unverified_expiry(text)
    assert value is None or isinstance(value, float)
