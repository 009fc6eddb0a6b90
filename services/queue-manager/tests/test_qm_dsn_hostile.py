"""Hostile input in a DSN: no address, reply text, host name, queue id or original header
can add a header line or a field, and any sender still gets a well-formed DSN.

Each DSN is read with tests.harness.dsn_reader: the exact lines as written, the email
package's parse (no defects, every value on one line) and flufl.bounce's scan.
"""

from datetime import UTC, datetime, timedelta
from email.headerregistry import AddressHeader
from typing import cast

import pytest

from kubemta_common.amqp.topology import DSN
from kubemta_queue_manager.dsn import Action, RecipientReport, Report, build_dsn
from tests.harness.dsn_reader import ReadDsn, read_dsn

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
ENCODED_ACTION = "=?utf-8?q?=0D=0AAction=3A_delivered?="
"""An RFC 2047 encoded word that decodes to CRLF `Action: delivered`; legal atext in a local part."""
ENCODED_STATUS = "=?utf-8?q?=0D=0AStatus=3A_2.0.0?="
RECIPIENT_FIELDS = ["Final-Recipient", "Action", "Status", "Remote-MTA", "Diagnostic-Code", "Last-Attempt-Date"]

INJECTIONS = [
    pytest.param(f"{ENCODED_ACTION}@local.example", id="encoded-word"),
    pytest.param("bob\r\nAction: delivered@local.example", id="crlf"),
    pytest.param("bob\nAction: delivered\n@local.example", id="lf"),
    pytest.param("bob\rAction: delivered@local.example", id="cr"),
    pytest.param("bob\x00\r\nAction: delivered@local.example", id="nul"),
    pytest.param("bob\u2028Action: delivered@local.example", id="u2028"),
    pytest.param("bob\x85Action: delivered@local.example", id="nel"),
    pytest.param('"bob\\"\r\n\r\nAction: delivered"@local.example', id="quoted-blank-line"),
    pytest.param("bob\ud800@local.example", id="surrogate"),
    pytest.param("", id="empty"),
    pytest.param("x" * 5000 + "@local.example", id="very-long"),
]


def report(
    *entries: RecipientReport,
    sender: str = "alice@example.com",
    action: Action = Action.FAILED,
    queue_id: str = "QORIG",
    original: bytes = b"From: Alice <alice@example.com>\r\nSubject: Hello\r\n\r\nbody\r\n",
) -> Report:
    return Report(
        hostname="mx.kubemta.test",
        queue_id=queue_id,
        sender=sender,
        arrival=NOW - timedelta(hours=2),
        last_attempt=NOW - timedelta(seconds=3),
        action=action,
        recipients=entries,
        original_content=original,
        will_retry_until=NOW + timedelta(days=4) if action is Action.DELAYED else None,
    )


def bounce(recipient: str = "bob@example.org", diagnostic: str = "User unknown", remote_mta: str = "mx.example.org"):
    return RecipientReport(recipient, "5.1.1", 550, diagnostic, remote_mta)


def build(rep: Report) -> ReadDsn:
    return read_dsn(build_dsn(rep, message_id="<QNEW@mx.kubemta.test>", now=NOW))


def only_kubemtas_fields(dsn: ReadDsn, recipients: int, action: str = "failed") -> None:
    """Exactly the fields kubemta writes, one Action per recipient block and it is the real one."""
    assert len(dsn.recipient_blocks) == recipients
    for block in dsn.recipient_blocks:
        assert [name for name, _ in block] == RECIPIENT_FIELDS
        assert [value for name, value in block if name == "Action"] == [action]
        assert [value for name, value in block if name == "Status"] == ["5.1.1"]
    assert [block.get_all("Action") for block in dsn.parsed_blocks[1:]] == [[action]] * recipients
    assert all("delivered" not in name.lower() for name, _ in dsn.fields)


@pytest.mark.parametrize("recipient", INJECTIONS)
def test_a_recipient_adds_no_line_or_field(recipient: str) -> None:
    dsn = build(report(bounce(recipient), bounce("carol@example.org")))
    only_kubemtas_fields(dsn, 2)
    final = dict(dsn.recipient_blocks[0])["Final-Recipient"]
    assert final.startswith(("rfc822; ", "utf-8; ")) and "=?" not in final
    assert dict(dsn.recipient_blocks[1])["Final-Recipient"] == "rfc822; carol@example.org"
    assert b"carol@example.org" in dsn.flufl[1]
    human = dsn.text(0).splitlines()
    assert len([line for line in human if line.startswith("<")]) == 2


def test_the_encoded_word_recipient_is_reported_as_xtext() -> None:
    dsn = build(report(bounce(f"{ENCODED_ACTION}@local.example")))
    only_kubemtas_fields(dsn, 1)
    assert dict(dsn.recipient_blocks[0])["Final-Recipient"] == (
        "utf-8; \\x{3D}?utf-8?q?\\x{3D}0D\\x{3D}0AAction\\x{3D}3A_delivered?\\x{3D}@local.example"
    )
    assert str(dsn.parsed_blocks[1]["Final-Recipient"]).count("\\x{3D}") == 5


@pytest.mark.parametrize(
    "diagnostic",
    [
        f"5.1.1 {ENCODED_ACTION} no such user",
        "5.1.1 no such user\r\nAction: delivered\r\nStatus: 2.0.0",
        "5.1.1 no such user\r\n\r\nFinal-Recipient: rfc822; victim@example.net\r\nAction: failed",
        "5.1.1 no\x00such\x0buser\u2028Action: delivered\x85Status: 2.0.0",
        "5.1.1 " + "\r\n".join(["Action: delivered"] * 500),
    ],
)
def test_a_remote_reply_text_adds_no_line_or_field(diagnostic: str) -> None:
    dsn = build(report(bounce(diagnostic=diagnostic)))
    only_kubemtas_fields(dsn, 1)
    value = dict(dsn.recipient_blocks[0])["Diagnostic-Code"]
    assert value.startswith("smtp; 550 5.1.1 ") and "=?" not in value
    assert dsn.flufl == (frozenset(), frozenset({b"bob@example.org"})), "no victim address is forged into the report"


@pytest.mark.parametrize(
    "host",
    [f"mx.example.org{ENCODED_STATUS}", "mx.example.org\r\nStatus: 2.0.0", "mx\u2028Status: 2.0.0", "m\x00x" * 400],
)
def test_a_remote_mta_host_name_adds_no_line_or_field(host: str) -> None:
    dsn = build(report(bounce(remote_mta=host)))
    only_kubemtas_fields(dsn, 1)
    assert dict(dsn.recipient_blocks[0])["Remote-MTA"].startswith("dns; m")


def test_a_queue_id_and_a_status_from_outside_add_no_field() -> None:
    forged = RecipientReport("bob@example.org", "5.1.1\r\nAction: delivered", 550, "no", "mx.example.org")
    dsn = build(report(forged, queue_id=f"Q1\r\nAction: delivered {ENCODED_ACTION}"))
    assert [name for name, _ in dsn.recipient_blocks[0]] == RECIPIENT_FIELDS
    assert dict(dsn.recipient_blocks[0])["Status"] == "5.0.0", "a status that is no RFC 3463 code is replaced"
    assert (
        dict(dsn.blocks[0])["X-Kubemta-Queue-ID"]
        == "Q1\\x{0D}\\x{0A}Action: delivered =\\x{3F}utf-8?q?=0D=0AAction=3A_delivered?="
    )


@pytest.mark.parametrize(
    ("sender", "username", "domain"),
    [
        (f"{ENCODED_ACTION}@local.example", ENCODED_ACTION, "local.example"),
        (f"{ENCODED_STATUS}@{ENCODED_ACTION}", None, None),
        ('"john \\"q\\" smith"@example.com', 'john "q" smith', "example.com"),
        ("back\\slash=?@example.com", "back\\slash=?", "example.com"),
        ("álvaro@exämple.com", "álvaro", "exämple.com"),
        ("user@[192.0.2.1]", "user", "[192.0.2.1]"),
        ("bob\r\nBcc: victim@example.net@example.com", None, None),
        ("bob\u2028x@example.com", None, None),
        ("bob\ud800@example.com", None, None),
        ("", None, None),
        ("no-at-sign", None, None),
        ("x" * 2000 + "@example.com", None, None),
    ],
)
def test_any_sender_gets_a_well_formed_dsn(sender: str, username: str | None, domain: str | None) -> None:
    dsn = build(report(bounce(), sender=sender))
    only_kubemtas_fields(dsn, 1)
    to = cast(AddressHeader, dsn.message["To"])
    if username is None:
        assert dsn.field("To") == "undisclosed-recipients:;"
        assert to.addresses == ()
    else:
        [address] = to.addresses
        assert (address.username, address.domain) == (username, domain)
    assert dsn.flufl[1] == frozenset({b"bob@example.org"}) or not sender.isascii()


def test_the_original_header_block_stays_inside_its_part() -> None:
    original = (
        b"Subject: fake\r\n--=_kubemta_0000\r\nContent-Type: message/delivery-status\r\n"
        b"X-Bare: a\rAction: delivered\r\nX-Nul: \x00\r\nX-Long: "
        + b"y" * 3000
        + b"\r\nX-8bit: \xc3\xa9\xe2\x80\xa8\r\n\r\nbody"
    )
    dsn = build(report(bounce(), original=original))
    only_kubemtas_fields(dsn, 1)
    assert dict(dsn.parts[2].fields)["Content-Transfer-Encoding"] == "quoted-printable"
    returned = dsn.part(2).get_payload(decode=True)
    assert returned == original.split(b"\r\n\r\n")[0] + b"\r\n"


def test_the_boundary_is_never_one_that_occurs_in_a_part(monkeypatch: pytest.MonkeyPatch) -> None:
    tokens = iter(["0" * 32, "1" * 32])
    monkeypatch.setattr("kubemta_queue_manager.dsn_mime.secrets.token_hex", lambda _: next(tokens))
    dsn = build(report(bounce(), original=b"X-Trap: --=_kubemta_" + b"0" * 32 + b"\r\n\r\n"))
    assert dsn.message.get_boundary() == "=_kubemta_" + "1" * 32
    assert len(dsn.parts) == 3


def test_an_smtputf8_sender_with_a_utf8_recipient_gets_a_global_delivery_status() -> None:
    """RFC 6533: the report names the address as UTF-8 (unitext), in message/global-delivery-status."""
    dsn = build(report(bounce("jörg@exämple.org"), bounce("bob+x=y@example.org"), sender="álvaro@exämple.com"))
    assert dsn.message.get_param("report-type") == "global-delivery-status"
    assert dict(dsn.parts[1].fields)["Content-Type"] == "message/global-delivery-status"
    assert dict(dsn.parts[1].fields)["Content-Transfer-Encoding"] == "8bit"
    assert [dict(block)["Final-Recipient"] for block in dsn.recipient_blocks] == [
        "utf-8; jörg@exämple.org",
        "rfc822; bob+x=y@example.org",
    ]
    assert [dict(block)["Action"] for block in dsn.recipient_blocks] == ["failed", "failed"]


def test_an_ascii_sender_gets_xtext_for_a_utf8_recipient_in_a_7bit_dsn() -> None:
    dsn = build(report(bounce("jörg@exämple.org")))
    assert dsn.raw.isascii()
    assert dict(dsn.recipient_blocks[0])["Final-Recipient"] == "utf-8; j\\x{F6}rg@ex\\x{E4}mple.org"
    assert "<jörg@exämple.org>: host mx.example.org said: 550 5.1.1 User unknown" in dsn.text(0)


async def test_the_results_handler_survives_an_encoded_word_sender(kit, manager, publisher) -> None:
    """The old builder raised on this sender, and the handler failed on every redelivery of the result."""
    sender = f"{ENCODED_ACTION}@local.example"
    job = kit.job(["bob@example.org"], sender=sender)
    await manager.handle_result(kit.result(job, [kit.bounced("bob@example.org")]))
    [(key, _, _, _)] = publisher.published
    assert key == DSN
    [accepted] = kit.dsns(publisher)
    assert list(accepted.recipients) == [sender]
    dsn = read_dsn(accepted.content)
    only_kubemtas_fields(dsn, 1)
    [address] = cast(AddressHeader, dsn.message["To"]).addresses
    assert address.addr_spec == sender
