"""RFC 3461 §4.3 RET (the whole message or its headers, KUBEMTA_DSN_RETURN_SIZE_LIMIT), §4.4 ENVID as
Original-Envelope-Id and §4.2 ORCPT as Original-Recipient (RFC 3464 §2.2.1, §2.3.1), hostile values included,
from a delivery result to the DSN read back with the strict reader."""

import email
import email.policy
from datetime import UTC, datetime
from typing import cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kubemta.v1 import message_pb2
from kubemta_common.dsn_parameters import parse_recipient_dsn
from kubemta_queue_manager.dsn import Action, RecipientReport, Report, build_dsn
from kubemta_queue_manager.dsn_fields import original_recipient
from kubemta_queue_manager.dsn_returned import returnable_message
from tests.harness.dsn_reader import read_dsn

RCPT = "bob@example.org"
NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
HEADERS_TEXT = [
    "I'm sorry to have to inform you that your message could not",
    "be delivered to one or more recipients. The headers of your",
    "message are attached below.",
]


def dsn_given(notify: str | None, orcpt: str | None = None) -> message_pb2.RecipientDsn:
    parsed = parse_recipient_dsn(notify, orcpt)
    assert parsed is not None
    return parsed


def ret_job(kit, ret: "message_pb2.DsnRet.ValueType", content: bytes | None = None) -> message_pb2.DeliveryJob:
    job: message_pb2.DeliveryJob = kit.job([RCPT])
    job.ret = ret
    if content is not None:
        job.content = content
    return job


async def bounce(kit, manager, publisher, job: message_pb2.DeliveryJob, result=None):
    await manager.handle_result(kit.result(job, [result or kit.bounced(RCPT)]))
    [dsn] = kit.dsns(publisher)
    return read_dsn(dsn.content)


async def test_ret_full_returns_the_whole_message(kit, manager, publisher) -> None:
    dsn = await bounce(kit, manager, publisher, ret_job(kit, message_pb2.DSN_RET_FULL))

    assert dsn.returned_message == kit.ORIGINAL
    assert dsn.parts[2].fields == [
        ("Content-Type", "message/rfc822"),
        ("Content-Transfer-Encoding", "7bit"),
        ("Content-Description", "Undelivered Message"),
    ]
    returned = cast(email.message.Message, dsn.part(2).get_payload()[0])
    assert returned["Subject"] == "Quarterly report"
    assert "Hello Bob," in returned.get_payload()
    human = dsn.text(0).splitlines()
    assert human[2:5] == [
        "I'm sorry to have to inform you that your message could not",
        "be delivered to one or more recipients. Your message is",
        "attached below.",
    ]


@pytest.mark.parametrize("ret", [message_pb2.DSN_RET_HDRS, message_pb2.DSN_RET_UNSPECIFIED])
async def test_ret_hdrs_or_no_ret_returns_the_headers(kit, manager, publisher, ret) -> None:
    dsn = await bounce(kit, manager, publisher, ret_job(kit, ret))

    assert dsn.returned_message is None
    assert dsn.parts[2].fields[0] == ("Content-Type", "text/rfc822-headers; charset=utf-8")
    assert b"Hello Bob" not in dsn.raw
    assert dsn.text(0).splitlines()[2:6] == [*HEADERS_TEXT, ""]
    [request] = kit.dsn_requests(publisher)
    assert request.original_content == b"" and not request.original_content_too_large


@pytest.mark.parametrize(("limit", "returned"), [(0, False), (None, True), ("exact", True), ("one less", False)])
async def test_the_size_limit_decides_whole_or_headers(kit, make_manager, publisher, limit, returned) -> None:
    size = len(kit.ORIGINAL)
    setting = {None: 50000, "exact": size, "one less": size - 1}.get(limit, limit)
    manager = make_manager(dsn_return_size_limit=setting)

    dsn = await bounce(kit, manager, publisher, ret_job(kit, message_pb2.DSN_RET_FULL))

    assert (dsn.returned_message is not None) is returned
    [request] = kit.dsn_requests(publisher)
    assert request.original_content_too_large is not returned
    if not returned:
        assert dsn.text(0).splitlines()[2:7] == [
            *HEADERS_TEXT,
            "Only its headers are returned: the whole message is larger",
            "than this mail system returns in a notification.",
        ]


def test_the_default_limit_is_postfix_bounce_size_limit(kit) -> None:
    assert kit.settings().dsn_return_size_limit == 50000


@pytest.mark.parametrize("action", ["deferred", "delivered"])
async def test_delay_and_success_dsns_return_headers_only(kit, manager, publisher, action) -> None:
    job = ret_job(kit, message_pb2.DSN_RET_FULL)
    job.arrival_time.FromDatetime(kit.NOW.replace(hour=2))  # 10 hours old: a delay warning is due
    job.recipient_dsn[RCPT].CopyFrom(dsn_given("SUCCESS,DELAY"))
    result = kit.deferred(RCPT) if action == "deferred" else kit.delivered(RCPT)

    await manager.handle_result(kit.result(job, [result]))

    [request] = kit.dsn_requests(publisher)
    assert request.original_content == b""
    [dsn] = kit.dsns(publisher)
    read = read_dsn(dsn.content)
    assert read.returned_message is None and read.kind == ("delay" if action == "deferred" else "success")


EIGHT_BIT_MIME = (
    "From: a@example.com\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
    "Content-Transfer-Encoding: 8bit\r\n\r\nGrüße aus Köln\r\n"
).encode()


async def test_8bit_mime_content_is_returned_made_7bit(kit, manager, publisher) -> None:
    dsn = await bounce(kit, manager, publisher, ret_job(kit, message_pb2.DSN_RET_FULL, EIGHT_BIT_MIME))

    returned = dsn.returned_message
    assert returned is not None and returned.isascii()
    assert b"Content-Transfer-Encoding: quoted-printable" in returned
    inner = cast(email.message.EmailMessage, dsn.part(2).get_payload()[0])
    assert inner.get_content().rstrip() == "Grüße aus Köln"


@pytest.mark.parametrize(
    "content",
    [
        "From: a@example.com\r\n\r\nGrüße without MIME headers\r\n".encode(),  # 8-bit, nothing declares it
        "Subject: Grüße\r\n\r\nbody\r\n".encode(),  # 8-bit header (SMTPUTF8)
        b"Subject: x\r\n\r\nbare\nline feed\r\n",
        b"Subject: x\r\n\r\n" + b"y" * 1200 + b"\r\n",
        b"not a header line\r\n\r\nbody\r\n",
    ],
)
async def test_content_that_cannot_travel_7bit_returns_the_headers_and_says_why(kit, manager, publisher, content):
    dsn = await bounce(kit, manager, publisher, ret_job(kit, message_pb2.DSN_RET_FULL, content))

    assert dsn.returned_message is None
    assert dsn.text(0).splitlines()[5:7] == [
        "Only its headers are returned: the whole message cannot be",
        "returned as it is (it is not 7-bit mail and cannot be made so).",
    ]


async def test_a_returned_message_cannot_end_its_part(kit, manager, publisher) -> None:
    """Lines that look like MIME boundaries (even kubemta's own prefix) stay inside the returned message."""
    hostile = (
        b'Subject: x\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="=_kubemta_"\r\n\r\n'
        b"--=_kubemta_\r\n\r\n--=_kubemta_--\r\n--\r\n\r\n"
    )
    dsn = await bounce(kit, manager, publisher, ret_job(kit, message_pb2.DSN_RET_FULL, hostile))

    assert dsn.returned_message == hostile
    assert len(dsn.message.get_payload()) == 3


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_returnable_is_7bit_crlf_lines_or_none(content: bytes) -> None:
    returned = returnable_message(content)
    if returned is not None:
        assert returned.isascii() and returned.endswith(b"\r\n")
        assert all(b"\r" not in line and b"\n" not in line for line in returned.split(b"\r\n"))


async def test_envid_is_the_original_envelope_id(kit, manager, publisher) -> None:
    job = kit.job([RCPT])
    job.envid = "QQ314159"

    dsn = await bounce(kit, manager, publisher, job)

    assert [name for name, _ in dsn.blocks[0]][0] == "Original-Envelope-Id"
    assert dsn.per_message["Original-Envelope-Id"] == "QQ314159"
    assert dsn.parsed_blocks[0]["Original-Envelope-Id"] == "QQ314159"


async def test_orcpt_is_the_original_recipient(kit, manager, publisher) -> None:
    job = kit.job([RCPT])
    job.recipient_dsn[RCPT].CopyFrom(dsn_given(None, "rfc822;Bob+2Blist@Example.org"))

    dsn = await bounce(kit, manager, publisher, job)

    [block] = dsn.recipient_blocks
    assert block[0] == ("Original-Recipient", "rfc822; Bob+list@Example.org")
    assert block[1] == ("Final-Recipient", f"rfc822; {RCPT}")
    assert dsn.flufl[1] == frozenset({b"Bob+list@Example.org"})  # Mailman finds the address it sent to


HOSTILE_ORCPTS = [
    ("rfc822", "victim@example.net\r\nAction: delivered"),
    ("rfc822", "bob@exämple.org"),
    ("rfc822", "=?utf-8?q?=0D=0AAction=3A_delivered?=@example.org"),
    ("rfc822", "a b@example.org"),
    ("rfc822", "x" * 488 + "@example.org"),
    ("utf-8", "用户@例子.广告"),
    ("utf-8", "plain@example.org"),
    ("bad type\r\n", "bob@example.org"),
    ("", "bob@example.org"),
]


@pytest.mark.parametrize(("addr_type", "address"), HOSTILE_ORCPTS)
@pytest.mark.parametrize("sender", ["alice@example.com", "用户@example.com"])
def test_a_hostile_orcpt_is_one_safe_line(addr_type: str, address: str, sender: str) -> None:
    entry = RecipientReport(RCPT, "5.1.1", 550, "5.1.1 unknown", orcpt_type=addr_type, orcpt_address=address)
    report = Report("mx.kubemta.test", "Q", sender, NOW, NOW, Action.FAILED, [entry], b"Subject: x\r\n\r\n")

    dsn = read_dsn(build_dsn(report, message_id="<QNEW@mx.kubemta.test>", now=NOW))

    [block] = dsn.recipient_blocks
    name, value = block[0]
    assert name == "Original-Recipient"
    assert [n for n, _ in block].count("Action") == 1
    plain = all("!" <= char <= "~" for char in address) and "=?" not in address
    if addr_type == "utf-8":
        assert value.startswith("utf-8; ")
    elif plain:  # a type that is no atom (CR/LF, empty) reads as rfc822
        assert value == f"rfc822; {address}"
    else:
        assert value.startswith("utf-8; ")
    global_report = dsn.message.get_param("report-type") == "global-delivery-status"
    assert global_report == (not sender.isascii() and not address.isascii())
    assert value.isascii() or global_report


def test_a_utf8_orcpt_is_readable_in_a_global_report_and_xtext_elsewhere() -> None:
    assert original_recipient("utf-8", "用户@例子.广告", utf8=True) == "utf-8; 用户@例子.广告"
    assert (
        original_recipient("utf-8", "用户@例子.广告")
        == "utf-8; \\x{7528}\\x{6237}@\\x{4F8B}\\x{5B50}.\\x{5E7F}\\x{544A}"
    )
    assert original_recipient("RFC822", "a+b=c@example.org") == "rfc822; a+b=c@example.org"


async def test_envid_and_orcpt_reach_every_kind_of_dsn(kit, manager, publisher) -> None:
    job = kit.job([RCPT])
    job.arrival_time.FromDatetime(kit.NOW.replace(hour=2))
    job.envid = "ENV-1"
    job.recipient_dsn[RCPT].CopyFrom(dsn_given("DELAY", "rfc822;orig@example.org"))

    await manager.handle_result(kit.result(job, [kit.deferred(RCPT)]))

    [dsn] = kit.dsns(publisher)
    read = read_dsn(dsn.content)
    assert read.kind == "delay"
    assert read.per_message["Original-Envelope-Id"] == "ENV-1"
    assert read.recipient_blocks[0][0] == ("Original-Recipient", "rfc822; orig@example.org")


def test_a_hostile_envid_is_one_safe_line() -> None:
    entry = RecipientReport(RCPT, "5.1.1", 550, "unknown")
    for envid in ["a\r\nReporting-MTA: dns; evil", "=?utf-8?q?x?=", "é" * 200]:
        report = Report("mx.kubemta.test", "Q", "a@example.com", NOW, NOW, Action.FAILED, [entry], b"", envid=envid)
        dsn = read_dsn(build_dsn(report, message_id="<QNEW@mx.kubemta.test>", now=NOW))
        names = [name for name, _ in dsn.blocks[0]]
        assert names == ["Original-Envelope-Id", "Reporting-MTA", "X-Kubemta-Queue-ID", "Arrival-Date"]
        assert dsn.per_message["Original-Envelope-Id"].isascii()


def test_the_parsed_returned_message_is_the_original(kit) -> None:
    entry = RecipientReport(RCPT, "5.1.1", 550, "unknown")
    report = Report(
        "mx.kubemta.test", "Q", "a@example.com", NOW, NOW, Action.FAILED, [entry], b"", full_message=kit.ORIGINAL
    )
    raw = build_dsn(report, message_id="<QNEW@mx.kubemta.test>", now=NOW)
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    returned = list(parsed.iter_parts())[2]
    assert returned.get_content_type() == "message/rfc822"
    assert returned.get_content().as_bytes().replace(b"\n", b"\r\n").startswith(b"Received: from client.example.com")
