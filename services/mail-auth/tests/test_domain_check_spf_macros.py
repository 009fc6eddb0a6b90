"""SPF macro expansion (RFC 7208 §7): the RFC's own examples (§7.4), escapes, URL-escaping, errors, truncation."""

import ipaddress

import pytest

from kubemta_mail_auth.domain_check.spf_macros import MacroContext, MacroError, expand, expand_domain, tokenize

# RFC 7208 §7.4: "The <sender> is strong-bad@email.example.com. The IPv4 SMTP client IP is 192.0.2.3.
# The IPv6 SMTP client IP is 2001:db8::cb01." (the HELO name here is ours: mx.example.org)
SENDER, DOMAIN, HELO = "strong-bad@email.example.com", "email.example.com", "mx.example.org"
V4 = MacroContext(SENDER, DOMAIN, ipaddress.ip_address("192.0.2.3"), HELO)
V6 = MacroContext(SENDER, DOMAIN, ipaddress.ip_address("2001:db8::cb01"), HELO)


@pytest.mark.parametrize(
    ("macro", "expansion"),
    [
        ("%{s}", "strong-bad@email.example.com"),
        ("%{o}", "email.example.com"),
        ("%{d}", "email.example.com"),
        ("%{d4}", "email.example.com"),
        ("%{d3}", "email.example.com"),
        ("%{d2}", "example.com"),
        ("%{d1}", "com"),
        ("%{dr}", "com.example.email"),
        ("%{d2r}", "example.email"),
        ("%{l}", "strong-bad"),
        ("%{l-}", "strong.bad"),
        ("%{lr}", "strong-bad"),
        ("%{lr-}", "bad.strong"),
        ("%{l1r-}", "strong"),
        ("%{ir}.%{v}._spf.%{d2}", "3.2.0.192.in-addr._spf.example.com"),
        ("%{lr-}.lp._spf.%{d2}", "bad.strong.lp._spf.example.com"),
        ("%{lr-}.lp.%{ir}.%{v}._spf.%{d2}", "bad.strong.lp.3.2.0.192.in-addr._spf.example.com"),
        ("%{ir}.%{v}.%{l1r-}.lp._spf.%{d2}", "3.2.0.192.in-addr.strong.lp._spf.example.com"),
        ("%{d2}.trusted-domains.example.net", "example.com.trusted-domains.example.net"),
        ("%{h}", "mx.example.org"),
        ("%{i}", "192.0.2.3"),
    ],
)
def test_rfc_7208_section_7_4_examples_ipv4(macro, expansion):
    assert expand(macro, V4) == expansion


def test_rfc_7208_section_7_4_example_ipv6():
    assert expand("%{ir}.%{v}._spf.%{d2}", V6) == (
        "1.0.b.c.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6._spf.example.com"
    )
    assert expand("%{i}", V6) == "2.0.0.1.0.d.b.8.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.c.b.0.1"


def test_escapes_uppercase_url_escaping_and_several_delimiters():
    assert expand("a%%b%_c%-d", V4) == "a%b c%20d"
    assert expand("%{S}", V4) == "strong-bad%40email.example.com"
    assert expand("%{L}", V4) == "strong-bad"  # '-' is unreserved (RFC 3986 §2.3)
    context = MacroContext("a+b=c@x.example", "x.example", ipaddress.ip_address("192.0.2.3"), "h.example")
    assert expand("%{l+=}", context) == "a.b.c"
    assert expand("%{lr+=}", context) == "c.b.a"
    assert expand("%{l2r+=}", context) == "b.a"


def test_validated_name_and_explanation_only_letters():
    context = MacroContext("u@x.example", "x.example", ipaddress.ip_address("192.0.2.3"), "h.example", "mx.x.example")
    assert expand("%{p}", context) == "mx.x.example"
    assert expand("%{p}", V4) == "unknown"
    assert expand("%{c}", V6, explanation=True) == "2001:db8::cb01"
    assert expand("%{t}", V4, explanation=True).isdigit()
    with pytest.raises(MacroError, match="only allowed in exp"):
        expand("%{c}", V4)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("%{x}", "unknown macro letter"),
        ("%{d0}", "must not be zero"),
        ("%{d", "malformed macro"),
        ("%{}", "malformed macro"),
        ("%{d2x}", "malformed macro"),
        ("a%b", "must be followed by"),
        ("trailing%", "must be followed by"),
        ("sp ace", "not allowed"),
    ],
)
def test_malformed_macro_strings(text, message):
    with pytest.raises(MacroError, match=message):
        tokenize(text)


def test_an_expanded_name_over_253_characters_loses_labels_on_the_left():
    context = MacroContext(f"{'a.' * 150}b@x.example", "x.example", ipaddress.ip_address("192.0.2.3"), "h")
    name = expand_domain("%{l}.example.com.", context)
    assert len(name) <= 253 and name.endswith(".b.example.com") and not name.startswith(".")
    assert len(expand(" %{l}.example.com".strip(), context)) > 253  # the truncation is expand_domain's job
