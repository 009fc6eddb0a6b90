"""Hypothesis fuzz of the DSN builder: arbitrary addresses, reply texts, host names, queue
ids, original headers and returned messages, ENVIDs and ORCPTs, failure classes, of every kind
of report (failure, delay, success; several recipients, any domains) never raise and always give
a DSN that the email package and flufl.bounce read as exactly the fields kubemta wrote."""

import email.utils
import re
from datetime import UTC, datetime, timedelta
from email.headerregistry import AddressHeader
from email.message import Message
from typing import cast

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from kubemta_common.bounce_class import BounceClass
from kubemta_queue_manager.dsn import SUCCESS_ACTIONS, Action, RecipientReport, Report, build_dsn
from kubemta_queue_manager.dsn_fields import MAX_ADDRESS, field_value, one_line, original_recipient, xtext_address
from tests.harness.dsn_reader import read_dsn

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
ENCODED_ACTION = "=?utf-8?q?=0D=0AAction=3A_delivered?="
HOSTILE = [
    "\r\n", "\r", "\n", "\x00", "\x85", "\u2028", "\u2029", "\x0b", "\x1f", "\x7f", "\t", " ", '"', "\\", "<", ">",
    "@", ";", ":", "=", "?", "=?", "?=", ENCODED_ACTION,
    "=?utf-8?b?DQpBY3Rpb246IGRlbGl2ZXJlZA==?=",
    "\r\nAction: delivered", "\r\n\r\nFinal-Recipient: rfc822; victim@example.net", "--", "\ud800", "\udfff",
    "\u202e", "\ufeff", "é", "ü", "用户", "\U0001f600", "\xa0", ".", "..", "[", "]",
]  # fmt: skip
PLAIN = re.compile(r"[a-z0-9]+(?:\.[a-z0-9]+)*@[a-z0-9]+(?:\.[a-z0-9]+)*")
"""Addresses that flufl.bounce's DSN detector can read back verbatim (it splits the field like MIME parameters)."""

fragments = st.one_of(st.sampled_from(HOSTILE), st.text(max_size=8), st.text(st.characters(codec="ascii"), max_size=8))
texts = st.lists(fragments, max_size=12).map("".join)
addresses = st.one_of(
    texts,
    st.tuples(texts, texts).map("@".join),
    st.tuples(texts, st.sampled_from(["example.org", "exämple.org", "[192.0.2.1]", ""])).map("@".join),
    st.from_regex(PLAIN, fullmatch=True),
    st.integers(900, 3000).map(lambda n: "x" * n + "@example.org"),
)
plain_addresses = st.from_regex(PLAIN, fullmatch=True)


@st.composite
def recipient_reports(
    draw: st.DrawFn, recipient: st.SearchStrategy[str] = addresses, action: Action | None = None
) -> RecipientReport:
    return RecipientReport(
        action=action,
        orcpt_type=draw(st.one_of(st.sampled_from(["", "rfc822", "utf-8", "RFC822", "x-local"]), texts)),
        orcpt_address=draw(st.one_of(st.just(""), addresses, st.text(max_size=600))),
        bounce_class=draw(st.one_of(st.sampled_from([*BounceClass, ""]), texts)),
        hard=draw(st.booleans()),
        recipient=draw(recipient),
        status=draw(st.one_of(st.sampled_from(["5.1.1", "4.4.7", "5.0.0", "4.2.0"]), texts)),
        smtp_code=draw(st.sampled_from([0, 250, 421, 450, 550, 554, 99999])),
        diagnostic=draw(st.one_of(texts, st.text(max_size=2000))),
        remote_mta=draw(st.one_of(st.just(""), st.just("mx.example.org"), texts)),
        expired=draw(st.booleans()),
        reply_status=draw(st.one_of(st.just(""), texts)),
    )


@st.composite
def reports(draw: st.DrawFn) -> Report:
    action = draw(st.sampled_from(Action))
    own = st.sampled_from(sorted(SUCCESS_ACTIONS)) if action in SUCCESS_ACTIONS else st.just(None)
    hostile = draw(st.lists(recipient_reports(action=draw(own)), max_size=4))
    plain = draw(st.lists(recipient_reports(plain_addresses, action=draw(own)), max_size=3))
    return Report(
        hostname=draw(st.one_of(st.just("mx.kubemta.test"), texts)),
        queue_id=draw(st.one_of(st.just("QORIG"), texts)),
        sender=draw(addresses),
        arrival=NOW - timedelta(hours=draw(st.integers(0, 200))),
        last_attempt=NOW,
        action=action,
        recipients=draw(st.permutations([*hostile, *plain])) if hostile or plain else [RecipientReport("a@b", "5.0.0")],
        original_content=draw(st.one_of(st.binary(max_size=300), texts.map(lambda t: t.encode("utf-8", "replace")))),
        will_retry_until=NOW + timedelta(days=3) if action is Action.DELAYED else None,
        envid=draw(st.one_of(st.just(""), texts)),
        full_message=draw(st.one_of(st.just(b""), st.binary(max_size=300), returnable_messages)),
        too_large=draw(st.booleans()),
    )


returnable_messages = st.tuples(texts, texts).map(
    lambda pair: (
        f"Subject: {pair[0].encode('ascii', 'replace').decode()}\r\n\r\n".encode()
        + pair[1].encode("utf-8", "replace").replace(b"\r", b"").replace(b"\n", b"\r\n")
    )
)
"""Original messages, often returnable: a header field and any body (8-bit, boundary-like lines)."""


def plain(address: str) -> bool:
    return bool(PLAIN.fullmatch(address)) and len(address) <= MAX_ADDRESS


def written_forms(address: str) -> list[str]:
    """The address as given, and as kubemta escapes it (flufl's heuristics may read those from the text), each also
    as the email package's address parser reads it (flufl's DSN reader does: `@[` comes back as `@[]`)."""
    forms = [address, field_value(address, utf8=True, limit=len(address) * 10 + 3), xtext_address(address)]
    return forms + [email.utils.parseaddr(form)[1] for form in forms]


def orcpt_as_flufl_reads_it(entry: RecipientReport) -> list[str]:
    """The words flufl.bounce's DSN reader takes from the Original-Recipient field kubemta wrote (its get_params, then
    parseaddr)."""
    if not entry.orcpt_address:
        return []
    block = Message()
    block["Original-Recipient"] = str(original_recipient(entry.orcpt_type, entry.orcpt_address))
    words = [key for key, _ in block.get_params([], "original-recipient")]
    return words + [email.utils.parseaddr(word)[1] for word in words]


def expected_fields(report: Report, entry: RecipientReport) -> list[str]:
    names = ["Original-Recipient"] if entry.orcpt_address else []
    names += ["Final-Recipient", "Action", "Status"]
    names += ["Remote-MTA"] if entry.remote_mta else []
    names += ["Diagnostic-Code"] if entry.smtp_code or report.action not in SUCCESS_ACTIONS else []
    names += ["Last-Attempt-Date"]
    names += ["Will-Retry-Until"] if report.action is Action.DELAYED else []
    return names


def found(action: Action, *recipients: RecipientReport, sender: str = "") -> Report:
    """A report a fuzz run found (pinned with @example): the fields that mattered, the rest empty."""
    return Report(
        hostname="mx.kubemta.test",
        queue_id="QORIG",
        sender=sender,
        arrival=NOW,
        last_attempt=NOW,
        action=action,
        recipients=list(recipients),
        original_content=b"",
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(reports())
@example(  # a reply's status is quoted in the diagnostic: flufl's llnl heuristic read "0@ " out of it
    found(
        Action.FAILED,
        RecipientReport(recipient="", status=",0@", smtp_code=250, diagnostic=",", remote_mta=""),
        RecipientReport(recipient="\ud800", status="5.1.1"),
        sender="\x85",
    )
)
@example(  # flufl.bounce reads "Final-Recipient: rfc822; @[" with the email package's parser: b"@[]"
    found(Action.FAILED, RecipientReport(recipient="@[", status="5.1.1"))
)
@example(  # flufl.bounce reported this recipient as b"a?"
    found(Action.FAILED, RecipientReport(recipient="A?=", status="5.1.1"), sender="a@example.org")
)
@example(  # a success report: flufl's llnl heuristic took the line "<,0@0,>: delivered to the mailbox" for a failure
    found(Action.DELIVERED, RecipientReport(recipient=",0@0,", status="5.1.1", action=Action.DELIVERED))
)
@example(  # the reply's own status (",0@") and text (",") are quoted as "250 ,0@ ,": flufl's llnl read "0@ "
    found(
        Action.DELIVERED,
        RecipientReport(
            recipient="", status="5.1.1", smtp_code=250, diagnostic=",", reply_status=",0@", action=Action.DELIVERED
        ),
    )
)
@example(  # the reply text ",0@\r\n," is quoted on one line as ",0@ ,": flufl's llnl read "0@ " (a 4.3.6 run's seed)
    found(
        Action.DELIVERED,
        RecipientReport(recipient="0@0", status="5.1.1", smtp_code=250, diagnostic=",0@\r\n,", action=Action.DELIVERED),
    )
)
@example(  # the recipient's line "<, 0@>: 250 ,": flufl's llnl read "0@>: 250 " across recipient and reply (4.3.6 run)
    found(
        Action.FAILED,
        RecipientReport(recipient=", 0@", status="5.1.1", smtp_code=250, diagnostic="", reply_status=","),
    )
)
def test_any_report_gives_a_dsn_of_exactly_kubemtas_fields(report: Report) -> None:
    dsn = read_dsn(build_dsn(report, message_id="<QNEW@mx.kubemta.test>", now=NOW), quotes_hostile_text=True)
    assert len(dsn.recipient_blocks) == len(report.recipients)
    for entry, block in zip(report.recipients, dsn.recipient_blocks, strict=True):
        assert [name for name, _ in block] == expected_fields(report, entry)
        values = dict(block)
        assert values["Action"] == (entry.action or report.action).value
        assert re.fullmatch(r"[245]\.\d{1,3}\.\d{1,3}", values["Status"])
        assert values["Status"].startswith("2.") == (report.action in SUCCESS_ACTIONS)
        if entry.orcpt_address:
            assert values["Original-Recipient"].startswith(("utf-8; ", f"{entry.orcpt_type.lower()}; ", "rfc822; "))
        assert values["Final-Recipient"].startswith(("rfc822; ", "utf-8; "))
        if plain(entry.recipient):
            assert values["Final-Recipient"] == f"rfc822; {entry.recipient}"
    assert dsn.per_message.get("Original-Envelope-Id", "") == field_value(report.envid)
    human = dsn.text(0).splitlines()
    listed = human[human.index("                   The mail system") + 2 :]
    reasons = [line for line in listed if line.startswith("    Reason: ")]
    listed = [line for line in listed if not line.startswith("    Reason: ")]
    assert len(listed) == len(report.recipients) and all(line.startswith("<") for line in listed), "a line each"
    known = [entry for entry in report.recipients if entry.bounce_class in set(BounceClass)]
    assert len(reasons) == (0 if report.action in SUCCESS_ACTIONS else len(known))
    if dsn.returned_message is not None:
        assert report.action is Action.FAILED and not report.too_large
    temporary, permanent = dsn.flufl
    found = temporary if report.action is Action.DELAYED else permanent
    if dsn.message.get_param("report-type") == "delivery-status" and report.action not in SUCCESS_ACTIONS:
        # flufl reads an rfc822 Original-Recipient instead of the Final-Recipient (the address the sender used)
        plains = {e.recipient.encode() for e in report.recipients if plain(e.recipient) and not e.orcpt_address}
        assert plains <= found, "flufl.bounce finds every plain failed recipient"
    # flufl's heuristics also read addresses out of the human-readable text, where a remote host name or reply
    # text is quoted (the status and the text as one line): whatever it finds must come from what the report was
    # given, never be made up
    texts = [
        text
        for entry in report.recipients
        for text in (entry.remote_mta, f"{entry.status} {entry.diagnostic}", f"{entry.reply_status} {entry.diagnostic}")
    ]
    texts += [one_line(text) for text in texts]  # a reply is quoted on one line: its CR, LF, tabs as single spaces
    forms = [form for entry in report.recipients for form in written_forms(entry.recipient)]
    forms += [form for entry in report.recipients for form in written_forms(entry.orcpt_address) if form]
    # flufl.bounce's DSN reader keeps the words of a utf-8 Original-Recipient (its type and its address, read as
    # MIME parameters) when a Final-Recipient of type rfc822 follows: a reader's quirk; what it reads there is taken
    # from the field as written from the given ORCPT, never from anything else
    forms += [word for entry in report.recipients for word in orcpt_as_flufl_reads_it(entry)]
    forms += [form for text in texts for form in written_forms(text)]
    # each recipient's line of the human-readable part ("<recipient>: reason") is written from the recipient and its
    # reply alone: flufl's llnl heuristic may read across the two there
    forms += listed
    for address in temporary | permanent:
        # flufl lower-cases what it reads
        assert any(address.decode().lower() in form.lower() for form in forms), f"forged: {address!r}"
    if report.action in SUCCESS_ACTIONS and not any("," in form for form in forms):
        # only a quoted `, x@y,` makes flufl read a success report as a failure: kubemta's own words never do
        assert not temporary and not permanent, f"flufl.bounce read a success report as failures: {permanent}"


@settings(max_examples=300, deadline=None)
@given(st.text(), st.booleans(), st.integers(3, 1000))
def test_field_value_is_one_safe_line_and_idempotent(text: str, utf8: bool, limit: int) -> None:
    value = field_value(text, utf8=utf8, limit=limit)
    assert len(value) <= limit
    assert value.isprintable() and "=?" not in value
    assert value.isascii() or utf8
    assert field_value(value, utf8=utf8, limit=limit) == value


local_parts = (
    st.lists(
        st.one_of(
            st.sampled_from([*"!#$%&'*+-/=?^_`{|}~.\"\\ @()<>,;:[]", "=?", "?=", "..", ENCODED_ACTION, "é", "用户"]),
            st.text(st.characters(codec="ascii", categories=("L", "N")), max_size=5),
        ),
        min_size=1,
        max_size=10,
    )
    .map("".join)
    .filter(lambda local: bool(local) and not (local.startswith('"') and local.endswith('"')))
)
domains = st.sampled_from(["example.org", "exämple.org", "[192.0.2.1]", "[IPv6:2001:db8::1]", "a-b.c_d.example"])


@settings(max_examples=300, deadline=None)
@given(local_parts, domains)
def test_a_sender_of_printable_characters_is_the_to_address(local: str, domain: str) -> None:
    """Quoted where it is no dot-atom (and `=`, `?` quoted-pairs): the email package reads back the same address."""
    sender = f"{local}@{domain}"
    report = Report("mx.kubemta.test", "Q", sender, NOW, NOW, Action.FAILED, [RecipientReport("a@b", "5.1.1")], b"")
    dsn = read_dsn(build_dsn(report, message_id="<QNEW@mx.kubemta.test>", now=NOW))
    [address] = cast(AddressHeader, dsn.message["To"]).addresses
    assert (address.username, address.domain) == (local, domain)


def test_an_orcpt_type_holding_an_encoded_word_start_reads_as_rfc822() -> None:
    """Found by hypothesis: the atom `=?` is a valid address-type, but the field gate breaks `=?`, which left
    `=\\x{3F}; 0`, a type no reader can parse."""
    from kubemta_queue_manager.dsn_fields import original_recipient

    assert str(original_recipient("=?", "0")).startswith("rfc822; ")
    assert str(original_recipient("x=?y", "a@b")).startswith("rfc822; ")
