"""The decisions of the ingress address policy (policy.py) at their boundaries: how long a domain and a
label may be, which address forms are syntax errors (501 5.1.3) or need SMTPUTF8, which domains count as
local, and which clients may relay."""

import ipaddress

import pytest

from kubemta_ingress.policy import (
    MAX_DOMAIN_LENGTH,
    MAX_LABEL_LENGTH,
    AddressProblem,
    RelayPolicy,
    canonical_domain,
    check_address,
    client_ip,
    dequote,
    domain_of,
    has_routing,
    normalize_domain,
)

LABEL = "a" * MAX_LABEL_LENGTH
DOMAIN_255 = ".".join([LABEL] * 4)  # 4 * 63 + 3 dots: the longest domain RFC 5321 section 4.5.3.1.2 allows
DOMAIN_256 = ".".join([LABEL] * 3 + ["b" * 62, "c"])  # 3 * 63 + 62 + 1 + 4 dots: one octet too many


def test_the_boundary_domains_are_255_and_256_octets() -> None:
    assert (len(DOMAIN_255), len(DOMAIN_256)) == (MAX_DOMAIN_LENGTH, MAX_DOMAIN_LENGTH + 1) == (255, 256)


# -- length limits -------------------------------------------------------------------------------------------


def test_a_domain_of_255_octets_is_a_domain_and_256_is_not() -> None:
    assert canonical_domain(DOMAIN_255) == DOMAIN_255
    assert canonical_domain(DOMAIN_256) is None
    assert check_address(f"user@{DOMAIN_255}", smtputf8=False) is None
    assert check_address(f"user@{DOMAIN_256}", smtputf8=False) is AddressProblem.SYNTAX


def test_the_final_dot_does_not_count_towards_the_255_octets() -> None:
    assert canonical_domain(DOMAIN_255 + ".") == DOMAIN_255
    policy = RelayPolicy.create([DOMAIN_255], [])
    assert policy.is_local(DOMAIN_255.upper() + ".")


def test_the_length_limit_counts_the_a_labels_of_unicode_domains() -> None:
    unicode_domain = ".".join([LABEL] * 3 + ["b" * 50, "bücher"])  # 249 characters, 256 octets as A-labels
    assert (len(unicode_domain), len(unicode_domain.encode("idna"))) == (249, 256)
    assert canonical_domain(unicode_domain) is None
    assert check_address(f"user@{unicode_domain}", smtputf8=True) is AddressProblem.SYNTAX
    shorter = ".".join([LABEL] * 3 + ["b" * 49, "bücher"])  # 255 octets as A-labels
    assert canonical_domain(shorter) == ".".join([LABEL] * 3 + ["b" * 49, "xn--bcher-kva"])


def test_a_label_of_63_octets_is_a_label_and_64_is_not() -> None:
    assert canonical_domain(f"{LABEL}.example") == f"{LABEL}.example"
    assert canonical_domain(f"{LABEL}a.example") is None
    assert check_address(f"user@{LABEL}.example", smtputf8=False) is None
    assert check_address(f"user@{LABEL}a.example", smtputf8=False) is AddressProblem.SYNTAX


# -- relay networks ---------------------------------------------------------------------------------------------


def test_a_client_in_a_relay_network_may_relay_and_one_outside_may_not() -> None:
    policy = RelayPolicy.create(["example.org"], [ipaddress.ip_network("192.0.2.0/24")])
    assert policy.accepts("user@other.test", ipaddress.ip_address("192.0.2.255"))
    assert not policy.accepts("user@other.test", ipaddress.ip_address("192.0.3.0"))
    assert not policy.accepts("user@other.test", None)
    assert policy.accepts("user@example.org", None)  # a local recipient needs no relay permission


@pytest.mark.parametrize(
    ("recipient", "local"),
    [
        ("user@example.org", True),
        ("@example.org", False),  # no local part: not a mailbox here
        ("user%other.test@example.org", False),
        ("user@other.test", False),
    ],
)
def test_a_local_address_needs_a_local_part_a_local_domain_and_no_routing(recipient: str, local: bool) -> None:
    policy = RelayPolicy.create(["Example.ORG"], [])
    assert policy.is_local_address(recipient) is local
    assert policy.accepts(recipient, ipaddress.ip_address("203.0.113.1")) is local


# -- address syntax ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        '""@example.org',  # an empty quoted local part is no mailbox
        "user@a1.2.3.4]",  # an address literal needs both brackets
        "user@[1.2.3.4a",
        "user@example.org.",  # RFC 5321 Domain has no final dot
    ],
)
def test_these_addresses_are_syntax_errors(address: str) -> None:
    assert check_address(address, smtputf8=True) is AddressProblem.SYNTAX


@pytest.mark.parametrize(
    ("domain", "a_labels"),
    [
        ("bü-cher.example", "xn--b-cher-3ya.example"),  # a hyphen inside a U-label
        ("क्ष.example", "xn--11b2ezc.example"),  # a non-spacing mark (Mn)
        ("कि.example", "xn--11b8f.example"),  # a spacing mark (Mc)
    ],
)
def test_unicode_labels_with_hyphens_and_combining_marks_are_domains(domain: str, a_labels: str) -> None:
    assert canonical_domain(domain) == a_labels
    assert check_address(f"user@{domain}", smtputf8=True) is None
    assert RelayPolicy.create([a_labels], []).is_local(domain)


def test_a_domain_that_is_no_domain_name_is_still_compared_trimmed_and_in_lower_case() -> None:
    assert normalize_domain(" [IPv6:2001:DB8::1]. ") == "[ipv6:2001:db8::1]"
    assert domain_of("user@[IPv6:2001:DB8::1]") == "[ipv6:2001:db8::1]"


@pytest.mark.parametrize("peer", [(), (3232235777, 25), ("/run/ingress.sock",), None, "/run/ingress.sock"])
def test_a_peer_without_a_textual_ip_address_has_no_client_ip(peer: object) -> None:
    assert client_ip(peer) is None


@pytest.mark.parametrize(
    ("local", "routing"),
    [
        ('"ab%', True),  # an opening quote alone quotes nothing: the % is routing
        ('%ab"', True),  # a closing quote alone neither
        ('"a%b"', True),
        ('"ab"', False),
        ('"', False),
    ],
)
def test_only_a_fully_quoted_local_part_is_dequoted(local: str, routing: bool) -> None:
    assert has_routing(local) is routing
    assert RelayPolicy.create(["example.org"], []).is_local_address(f"{local}@example.org") is not routing


@pytest.mark.parametrize(
    ("local", "compared"),
    [
        ('"john\\ smith"', "john smith"),  # recipient maps compare local parts in this form
        ('"a\\"b"', 'a"b'),
        ('"a\\\\b"', "a\\b"),
        ("john.smith", "john.smith"),
    ],
)
def test_dequoting_drops_the_quotes_and_the_quoted_pair_backslashes(local: str, compared: str) -> None:
    assert dequote(local) == compared


def test_a_unicode_label_longer_than_63_octets_as_an_a_label_is_no_label() -> None:
    longest = "ü" + "b" * 55  # 56 characters, 63 octets as an A-label
    assert canonical_domain(f"{longest}.example") == "xn--" + "b" * 55 + "-oxf.example"
    assert canonical_domain(f"{longest}b.example") is None  # 64 octets as an A-label
