"""End to end: hostile addresses and reply texts cannot forge a field into a bounce, and a
hostile sender still gets its bounce (issue 11 item 2).

Mail goes in over SMTP (smtplib) to the four services, the destination refuses it with
a 550 whose text carries an RFC 2047 encoded word and extra reply lines, and the DSN as
the sender's MX received it is read with tests.harness.dsn_reader (exact lines, the
email package, flufl.bounce).
"""

from email.headerregistry import AddressHeader
from typing import cast

import pytest

from tests.e2e.conftest import MailWorld, make_message, send
from tests.harness.dsn_reader import ReadDsn, read_dsn
from tests.harness.stack import Stack

pytestmark = [pytest.mark.broker, pytest.mark.e2e]

ENCODED_ACTION = "=?utf-8?q?=0D=0AAction=3A_delivered?="
"""Decodes to CRLF `Action: delivered`; legal atext, so a legal local part."""
ENCODED_STATUS = "=?utf-8?q?=0D=0AStatus=3A_2.0.0?="
HOSTILE_REPLY = (
    f"550-5.1.1 {ENCODED_STATUS} no such user\r\n"
    "550-Action: delivered\r\n"
    "550 5.1.1 Final-Recipient: rfc822; victim@other.e2e.test"
)
"""A multi-line refusal whose lines look like DSN fields, one of them an encoded CRLF."""
PEER_VIEW = '"\r\nAction: delivered"'
"""How the test peer (aiosmtpd, whose path parser decodes encoded words) sees ENCODED_ACTION as a local part;
kubemta sends the path as it came."""
RECIPIENT_FIELDS = ["Final-Recipient", "Action", "Status", "Remote-MTA", "Diagnostic-Code", "Last-Attempt-Date"]


def only_kubemtas_fields(dsn: ReadDsn, recipients: int) -> None:
    """Exactly the fields kubemta writes: one Action per recipient block, the real one."""
    assert len(dsn.recipient_blocks) == recipients
    for block in dsn.recipient_blocks:
        assert [name for name, _ in block] == RECIPIENT_FIELDS
        assert [value for name, value in block if name == "Action"] == ["failed"]
        assert [value for name, value in block if name == "Status"] == ["5.1.1"]
        assert "=?" not in "".join(value for _, value in block)
    assert [block.get_all("Action") for block in dsn.parsed_blocks[1:]] == [["failed"]] * recipients


def no_crash(stack: Stack) -> None:
    """The queue-manager logged no error (a failing results handler logs one per redelivery)."""
    log = stack.log("queue-manager")
    assert "Traceback" not in log
    assert [e for e in stack.log_events("queue-manager") if e.get("level") in ("error", "critical")] == []


async def test_hostile_recipient_and_reply_text_forge_no_field(mta: tuple[Stack, str], world: MailWorld) -> None:
    stack, server = mta
    sender = "alice@sender.e2e.test"
    hostile = f"{ENCODED_ACTION}@mx.e2e.test"
    mx1 = world.peer("mx1", rules={PEER_VIEW: HOSTILE_REPLY, "nobody": "550 5.1.1 No such user"})
    bounce_mx = world.peer("bounce-mx")
    await mx1.start()
    await bounce_mx.start()
    outcome = await send(server, sender, [hostile, "nobody@mx.e2e.test"], make_message(sender, [hostile], "hostile"))
    assert outcome.data and outcome.data[0] == 250, outcome
    [bounce] = await bounce_mx.wait_for_messages(1, timeout=30)
    assert bounce.mail_from == "" and bounce.rcpt_tos == [sender]

    dsn = read_dsn(bounce.content)
    only_kubemtas_fields(dsn, 2)
    finals = sorted(dict(block)["Final-Recipient"] for block in dsn.recipient_blocks)
    assert finals == [
        "rfc822; nobody@mx.e2e.test",
        "utf-8; \\x{3D}?utf-8?q?\\x{3D}0D\\x{3D}0AAction\\x{3D}3A_delivered?\\x{3D}@mx.e2e.test",
    ]
    [diagnostic] = [dict(b)["Diagnostic-Code"] for b in dsn.recipient_blocks if "Action" in dict(b)["Final-Recipient"]]
    assert diagnostic.startswith("smtp; 550 5.1.1 =\\x{3F}utf-8?q?=0D=0AStatus=3A_2.0.0?= no such user")
    assert "victim@other.e2e.test" in diagnostic, "the reply is reported, inside its one field"
    assert dsn.flufl == (frozenset(), frozenset({b"nobody@mx.e2e.test"})), "no victim address, no delivered one"
    no_crash(stack)


async def test_hostile_sender_gets_its_bounce(mta: tuple[Stack, str], world: MailWorld) -> None:
    """The old builder raised on this sender: the result was redelivered forever and no bounce left."""
    stack, server = mta
    sender = f"{ENCODED_ACTION}@sender.e2e.test"
    mx1 = world.peer("mx1", rules={"nobody": "550 5.1.1 No such user"})
    bounce_mx = world.peer("bounce-mx")
    await mx1.start()
    await bounce_mx.start()
    outcome = await send(server, sender, ["nobody@mx.e2e.test"], make_message(sender, ["nobody@mx.e2e.test"], "hs"))
    assert outcome.data and outcome.data[0] == 250, outcome
    # 60 s: the bounce crosses every stage twice; once, under CI's full load, it took longer than 30 s
    [bounce] = await bounce_mx.wait_for_messages(1, timeout=60)
    assert bounce.mail_from == "" and bounce.rcpt_tos == [f"{PEER_VIEW}@sender.e2e.test"]

    dsn = read_dsn(bounce.content)
    only_kubemtas_fields(dsn, 1)
    [address] = cast(AddressHeader, dsn.message["To"]).addresses
    assert address.addr_spec == sender
    assert dsn.flufl == (frozenset(), frozenset({b"nobody@mx.e2e.test"}))
    assert await stack.metric("queue-manager", "kubemta_bounces_sent_total") == 1
    no_crash(stack)
