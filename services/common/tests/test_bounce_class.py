"""Bounce classes of kubemta's own failures (exact statuses and texts of the resolver, worker and queue-manager),
the hard/soft rule, and hostile input (hypothesis): always a member of BounceClass, never an exception."""

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kubemta_common.bounce_class import OWN_STATUSES, BounceClass, Classification, classify
from kubemta_common.bounce_texts import STRONG_RULES, TEXT_LIMIT, WEAK_RULES, normalised

INVALID = BounceClass.INVALID_RECIPIENT
LARGE = BounceClass.MESSAGE_TOO_LARGE
POLICY = BounceClass.POLICY
REPUTATION = BounceClass.REPUTATION
RATE = BounceClass.RATE_LIMITED
DNS = BounceClass.DNS_FAILURE
TLS = BounceClass.TLS_FAILURE
CONNECTION = BounceClass.CONNECTION_FAILURE
OTHER = BounceClass.OTHER
HARD, SOFT = True, False
HOST = "mx1.example.com[192.0.2.10]:25"

# (smtp_code, status, diagnostic) exactly as the services build them, with sample values in the f-strings.
RESOLVER = [
    # mx.py _temporary (SERVFAIL, timeout), _not_found (NXDOMAIN), null MX, no address; router.py next hops
    (0, "4.4.3", "Host or domain name lookup failed temporarily (example.com type=MX: timed out)", DNS, SOFT),
    (
        0,
        "4.4.3",
        "Host or domain name lookup failed temporarily (example.com type=MX: All nameservers failed to answer the "
        "query example.com. IN MX: Server Do53:127.0.0.53@53 answered SERVFAIL)",
        DNS,
        SOFT,
    ),
    (
        0,
        "4.4.3",
        "Host or domain name lookup failed temporarily (no address for any MX host: mx1.example.com type=A: timed "
        "out; mx1.example.com type=AAAA: timed out)",
        DNS,
        SOFT,
    ),
    (0, "5.1.2", "Host or domain name not found (nosuch.example type=MX: host not found)", DNS, HARD),
    (0, "5.1.2", "Host or domain name not found (invalid name 'a..b type=MX': A DNS label is empty.)", DNS, HARD),
    (0, "5.1.10", "Recipient address has null MX", INVALID, HARD),
    (0, "5.4.4", "unable to route: no address for any MX host", DNS, HARD),
    (0, "5.4.4", "unable to route: example.com has no MX and no address", DNS, HARD),
    (
        0,
        "5.4.4",
        "relayhost [smtp.example.net]:587: Host or domain name not found (smtp.example.net type=A: host not found)",
        DNS,
        HARD,
    ),
    (
        0,
        "4.4.3",
        "transport lmtp.example.net:24: Host or domain name lookup failed temporarily (lmtp.example.net type=A: "
        "timed out)",
        DNS,
        SOFT,
    ),
    # route_tls.py: an enforced MTA-STS policy allows none of the MX hosts
    (
        0,
        "4.7.5",
        "MTA-STS policy of example.com (mode enforce, id 20240101T000000) allows none of its MX hosts "
        "(mx.spam-blocklist.example); allowed: mx1.example.com",
        TLS,
        SOFT,
    ),
]

WORKER = [
    # connection.py: connect, greeting, lost connection, timeouts
    (0, "4.4.1", f"connect to {HOST}: Connection refused", CONNECTION, SOFT),
    (0, "4.4.1", f"connect to {HOST}: Connection timed out", CONNECTION, SOFT),
    (0, "4.4.1", f"connect to {HOST}: timed out waiting for the server greeting", CONNECTION, SOFT),
    (0, "4.4.1", f"connect to {HOST}: No route to host", CONNECTION, SOFT),
    (0, "4.4.1", f"connect to {HOST}: Network is unreachable", CONNECTION, SOFT),
    (0, "4.4.2", f"conversation with {HOST} timed out while sending RCPT TO", CONNECTION, SOFT),
    (0, "4.4.2", f"lost connection with {HOST} while sending DATA: Connection reset by peer", CONNECTION, SOFT),
    (
        0,
        "4.4.2",
        f"lost connection with {HOST} while performing the STARTTLS handshake: TLS error: WRONG_VERSION_NUMBER",
        CONNECTION,
        SOFT,
    ),
    (
        0,
        "4.4.2",
        f"timed out with {HOST} while waiting for the reply to the end of data -- message may be sent more than once",
        CONNECTION,
        SOFT,
    ),
    # the attempt's deadline (attempt_limits.deadline_text, deliverer._deadline_failure, _unanswered)
    (
        0,
        "4.4.1",
        f"connect to {HOST}: not tried, the delivery attempt's deadline (5m, KUBEMTA_DELIVERY_ATTEMPT_DEADLINE) has "
        "passed",
        CONNECTION,
        SOFT,
    ),
    (
        0,
        "4.4.1",
        "the delivery attempt's deadline (5m, KUBEMTA_DELIVERY_ATTEMPT_DEADLINE) has passed after 0 of 2 route "
        "address(es)",
        CONNECTION,
        SOFT,
    ),
    (
        421,
        "4.7.0",
        "the delivery attempt's deadline (5m, KUBEMTA_DELIVERY_ATTEMPT_DEADLINE) has passed after 2 of 2 route "
        f"address(es); last: host {HOST} said: 421 4.7.0 Error: too many connections from 192.0.2.7 (in reply to "
        "MAIL FROM command)",
        RATE,
        SOFT,
    ),
    (0, "4.4.1", "no host gave an answer for this recipient", CONNECTION, SOFT),
    # host-level rejections (connection.py: refused to talk to me / said ... in reply to)
    (
        554,
        "4.7.1",
        f"host {HOST} refused to talk to me: 554 5.7.1 Service unavailable; Client host [192.0.2.7] blocked using "
        "zen.spamhaus.org; https://www.spamhaus.org/query/ip/192.0.2.7",
        REPUTATION,
        SOFT,
    ),
    (
        421,
        "4.0.0",
        f"host {HOST} said: 421 Too many concurrent SMTP connections from this IP address; please try again later "
        "(in reply to MAIL FROM command)",
        RATE,
        SOFT,
    ),
    # deliverer.py / destinations.py
    (0, "4.4.3", "no route to example.com: the job has no hosts to deliver to", DNS, SOFT),
    (
        0,
        "4.4.5",
        "delivery temporarily suspended: 20 deliveries to example.com already running, none finished within 30s",
        RATE,
        SOFT,
    ),
    (
        0,
        "4.7.0",
        "delivery temporarily suspended for 55s: 421 4.7.0 [TSS04] Messages from 192.0.2.7 temporarily deferred due "
        "to unexpected volume or user complaints - 4.16.55.1; see https://postmaster.yahooinc.com/error-codes",
        REPUTATION,
        SOFT,
    ),
    (
        0,
        "4.0.0",
        "delivery temporarily suspended for 55s: 421 mx1.example.com Service not available, closing transmission "
        "channel",
        RATE,
        SOFT,
    ),
    # tls_negotiation.py (Postfix's wording)
    (
        0,
        "4.7.4",
        f"TLS is required, but was not offered by host {HOST} (TLS policy encrypt, entry example.com)",
        TLS,
        SOFT,
    ),
    (
        0,
        "4.7.4",
        f"TLS is required, but host {HOST} refused STARTTLS: 454 4.7.0 TLS not available due to local problem (TLS "
        "policy verify, mta-sts enforce (id 1))",
        TLS,
        SOFT,
    ),
    (
        0,
        "4.7.5",
        f"TLS is required, but the certificate of host {HOST} could not be verified: certificate has expired (TLS "
        "policy verify, mta-sts enforce (id 1))",
        TLS,
        SOFT,
    ),
    (
        0,
        "4.7.5",
        f"TLS is required, but the certificate of host {HOST} could not be verified: Hostname mismatch, certificate "
        "is not valid for 'mx1.example.com'. (TLS policy verify, entry example.com)",
        TLS,
        SOFT,
    ),
    (
        0,
        "4.7.5",
        f"TLS is required, but the TLS handshake with host {HOST} failed: TLS error: SSLV3_ALERT_HANDSHAKE_FAILURE "
        "(TLS policy encrypt, relayhost (encrypt at least))",
        TLS,
        SOFT,
    ),
    (
        0,
        "4.7.5",
        f"TLS is required, but host {HOST} matches none of the MTA-STS mx patterns (*.example.net) (TLS policy "
        "verify, mta-sts enforce (id 1))",
        TLS,
        SOFT,
    ),
    # relay_auth.py
    (
        0,
        "4.7.4",
        f"TLS is required to authenticate to relayhost {HOST}, but the session is not encrypted",
        TLS,
        SOFT,
    ),
    (
        0,
        "4.7.5",
        f"the certificate of relayhost {HOST} was not verified, and credentials go only over a verified certificate "
        "(KUBEMTA_RELAYHOST_TLS_UNVERIFIED_NAME names the one host allowed without)",
        TLS,
        SOFT,
    ),
    (
        0,
        "4.7.4",
        f"relayhost {HOST} offers no SASL mechanism kubemta supports (PLAIN, LOGIN): it offers CRAM-MD5",
        POLICY,
        SOFT,
    ),
    (
        535,
        "4.7.8",
        f"SASL authentication to relayhost {HOST} as 'mailer' failed: 535 5.7.8 Error: authentication failed: "
        "authentication failure (in reply to AUTH PLAIN)",
        POLICY,
        SOFT,
    ),
    # size_limit.py, eight_bit.py, mail_transaction.py
    (0, "5.3.4", f"message size 20971520 exceeds size limit 10240000 of server {HOST}", LARGE, HARD),
    (0, "5.6.7", f"SMTPUTF8 is required, but was not offered by host {HOST}", OTHER, HARD),
    (
        0,
        "5.6.3",
        f"host {HOST} does not support 8BITMIME, and conversion to 7 bit is not possible: a line is longer than "
        "998 octets",
        OTHER,
        HARD,
    ),
    (0, "5.1.3", "bad recipient address: address contains a line break", INVALID, HARD),
    (0, "5.1.7", "bad sender address: address contains a line break", POLICY, HARD),
]

QUEUE_MANAGER = [
    # fate.py: a recipient the reporter left out (status filled in as 4.0.0); events/deletion.py: operator delete
    (0, "4.0.0", "no result reported for this recipient", OTHER, SOFT),
    (0, "5.3.0", "deleted by the administrator", OTHER, SOFT),
    # fate.py: RecipientFate.status of an expired recipient, should a caller leave out expired=True
    (0, "4.4.7", "connect to mx1.example.com[192.0.2.10]:25: Connection timed out", BounceClass.EXPIRED, HARD),
]


@pytest.mark.parametrize(("code", "status", "text", "expected", "hard"), RESOLVER + WORKER + QUEUE_MANAGER)
def test_kubemtas_own_failures_get_their_class(
    code: int, status: str, text: str, expected: BounceClass, hard: bool
) -> None:
    assert classify(code, status, text) == Classification(expected, hard)


def test_every_own_status_is_tested() -> None:
    tested = {status for _, status, *_ in RESOLVER + WORKER + QUEUE_MANAGER}
    assert set(OWN_STATUSES) <= tested


@pytest.mark.parametrize(
    ("status", "diagnostic"),
    [
        ("4.4.7", "connect to mx1.example.com[192.0.2.10]:25: Connection timed out"),
        ("4.4.7", "452 4.2.2 The email account that you tried to reach is over quota."),
        ("5.1.1", "550 5.1.1 user unknown"),
    ],
)
def test_expired_is_hard_whatever_the_last_failure(status: str, diagnostic: str) -> None:
    # fate.py bounces an expired recipient with 4.4.7 and its last diagnostic
    assert classify(0, status, diagnostic, expired=True) == Classification(BounceClass.EXPIRED, True)


def test_own_status_with_a_reply_code_is_read_as_a_reply() -> None:
    # the same status from a remote server (smtp_code set) is a reply: its text decides
    assert classify(421, "4.4.5", "421 4.4.5 too many connections").bounce_class is RATE
    assert classify(550, "5.3.0", "550 5.3.0 user unknown") == Classification(INVALID, True)


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [
        (550, "5.1.1", INVALID),
        (450, "4.1.1", INVALID),
        (550, "5.2.2", BounceClass.MAILBOX_FULL),
        (552, "5.3.4", LARGE),
        (550, "5.7.23", POLICY),
        (550, "5.7.27", POLICY),
        (451, "4.7.28", RATE),
        (550, "5.1.2", DNS),
        (450, "4.4.3", DNS),
        (421, "4.4.1", CONNECTION),
        (421, "4.4.2", CONNECTION),
        (530, "5.7.10", TLS),
        (550, "5.7.30", TLS),
        (550, "5.7.1", POLICY),
        (550, "5.7.606", POLICY),
        (550, "5.0.0", INVALID),
        (551, "5.0.0", INVALID),
        (553, "5.0.0", INVALID),
        (552, "5.0.0", BounceClass.MAILBOX_FULL),
        (554, "5.0.0", OTHER),
        (451, "", OTHER),
        (550, "", INVALID),
        (550, "garbage", INVALID),
        (0, "", OTHER),
    ],
)
def test_codes_without_a_telling_text(code: int, status: str, expected: BounceClass) -> None:
    # "x" says nothing: the enhanced status decides, else the reply code (RFC 3463, RFC 5321 §4.2.2)
    assert classify(code, status, f"{code} x").bounce_class is expected


@pytest.mark.parametrize(
    ("code", "status", "text", "hard"),
    [
        (550, "5.1.1", "user unknown", True),  # permanent: hard
        (450, "4.1.1", "user unknown", False),  # every 4xx is soft
        (552, "5.2.2", "mailbox full", False),  # a full mailbox is soft even when permanent
        (550, "5.4.5", "daily sending quota exceeded", False),  # so is a rate limit
        (550, "5.7.1", "blocked using zen.spamhaus.org", True),
        (421, "4.7.0", "[TSS09] permanently deferred", False),  # the code decides, not the words
        (550, "", "no such user", True),  # no status: the reply code says permanent
        (0, "5.1.2", "Host or domain name not found", True),
        (0, "4.4.3", "Host or domain name lookup failed temporarily", False),
    ],
)
def test_hard_is_permanent_except_full_mailboxes_and_rates(code: int, status: str, text: str, hard: bool) -> None:
    assert classify(code, status, text).hard is hard


def test_a_continuation_lines_codes_do_not_split_a_phrase() -> None:
    assert normalised("421-4.7.28 an unusual rate of\r\n421-4.7.28 unsolicited mail") == (
        "an unusual rate of unsolicited mail"
    )
    # an IP address or Yahoo's 4.16.55.1 is not a status code
    assert normalised("from 192.0.2.7 - 4.16.55.1") == "from 192.0.2.7 - 4.16.55.1"


def test_text_past_the_limit_is_not_read() -> None:
    far = "x" * TEXT_LIMIT + " user unknown"
    assert classify(451, "4.0.0", far).bounce_class is OTHER
    assert classify(451, "4.0.0", far[-20:]).bounce_class is INVALID


def test_every_rule_is_lower_case_with_bounded_gaps() -> None:
    # the text is case-folded before matching; an unbounded gap (.* / .+) could backtrack on hostile text
    for rule in STRONG_RULES + WEAK_RULES:
        assert rule.pattern.pattern == rule.pattern.pattern.lower()
        assert not re.search(r"\.[*+]", rule.pattern.pattern), rule.pattern.pattern
        assert rule.source


_STATUSES = st.one_of(
    st.text(max_size=12),
    st.from_regex(r"\A[0-9]\.[0-9]{1,4}\.[0-9]{1,4}\Z"),
    st.sampled_from(sorted(OWN_STATUSES)),
)
_TEXTS = st.one_of(
    st.text(max_size=300),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=0, max_size=10_240),
    st.lists(
        st.sampled_from(
            ["user", "unknown", "spam", "rate", "5.7.1", "550-", "blocked", "\x00", "\r\n", "tls", "quota", " "]
        ),
        max_size=400,
    ).map("".join),
)


@settings(max_examples=200, deadline=None)
@given(code=st.integers(min_value=-(2**40), max_value=2**40), status=_STATUSES, text=_TEXTS, expired=st.booleans())
def test_any_input_gets_a_class_and_never_raises(code: int, status: str, text: str, expired: bool) -> None:
    found = classify(code, status, text, expired=expired)
    assert isinstance(found.bounce_class, BounceClass)
    assert isinstance(found.hard, bool)
    if not (status.startswith("5") or 500 <= code < 600 or expired):
        assert not found.hard


def test_hostile_text_of_10_kib_is_classified() -> None:
    # the worst case for the bounded gaps: their first words repeated, never completed
    for filler in ("mta-sts policy of ", "listed at ", "exceeds ", "doesn't have a ", "content ", "resend "):
        text = filler * (10_240 // len(filler))
        assert isinstance(classify(550, "5.7.1", text).bounce_class, BounceClass)
