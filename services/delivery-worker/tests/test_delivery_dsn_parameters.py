"""The DSN parameters a next hop is given (mail_parameters.py), for any value a job may hold: each is a valid
`NAME=esmtp-value` that reads back as the stored value, or is left out; none to a server without DSN."""

import re

from hypothesis import given
from hypothesis import strategies as st

from kubemta.v1 import message_pb2
from kubemta_common import dsn_parameters
from kubemta_delivery_worker.mail_parameters import dsn_mail_parameters, dsn_rcpt_parameters
from kubemta_delivery_worker.wire import command_line

RCPT = "user@dest.test"
PARAMETER = re.compile(r"(RET|ENVID|NOTIFY|ORCPT)=[!-<>-~]+")  # RFC 5321 §4.1.2 esmtp-keyword "=" esmtp-value

# Any text a protobuf string holds (no lone surrogates), controls and non-ASCII included.
ANY_TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=600)
PRINTABLE_ASCII = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=30)
UNICODE_ADDRESS = st.text(st.characters(exclude_categories=["Cs", "Cc"]), min_size=1, max_size=50)


def job_with(envid: str = "", ret: int = 0, dsn: message_pb2.RecipientDsn | None = None) -> message_pb2.DeliveryJob:
    the_job = message_pb2.DeliveryJob(recipients=[RCPT, "other@dest.test"], envid=envid, ret=ret)  # type: ignore[arg-type]
    if dsn is not None:
        the_job.recipient_dsn[RCPT].CopyFrom(dsn)
    return the_job


def named(parameters: list[str]) -> dict[str, str]:
    found = dict(parameter.split("=", 1) for parameter in parameters)
    assert len(found) == len(parameters), "a parameter given twice"
    return found


def assert_one_command_line(command: bytes, address: str, parameters: list[str]) -> None:
    for parameter in parameters:
        assert PARAMETER.fullmatch(parameter), parameter
    line = command_line(command, address, parameters, "ascii")  # raises for a control character
    assert line.count(b"\r\n") == 1 and line.endswith(b"\r\n") and b"\n" not in line[:-2] and b"\r" not in line[:-2]


@given(envid=ANY_TEXT, ret=st.sampled_from(list(message_pb2.DsnRet.values())))
def test_mail_parameters_are_valid_and_faithful_or_left_out(envid: str, ret: int) -> None:
    the_job = job_with(envid, ret)

    parameters = dsn_mail_parameters(the_job, offered=True)

    assert_one_command_line(b"MAIL FROM:", "alice@sender.test", parameters)
    found = named(parameters)
    assert set(found) <= {"RET", "ENVID"}
    assert dsn_parameters.parse_ret(found.get("RET")) == ret
    if "ENVID" in found:
        assert dsn_parameters.parse_envid(found["ENVID"]) == envid
    else:
        assert not envid or not (envid.isascii() and envid.isprintable()) or len(envid) > 33
    assert dsn_mail_parameters(the_job, offered=False) == []


@given(
    addr_type=st.one_of(st.sampled_from(["rfc822", "utf-8", "x-local"]), ANY_TEXT),
    address=ANY_TEXT,
    notify=st.sampled_from([(False, False, False, False), (True, True, False, False), (True, False, True, True)]),
    never=st.booleans(),
)
def test_rcpt_parameters_are_valid_and_faithful_or_left_out(
    addr_type: str, address: str, notify: tuple[bool, bool, bool, bool], never: bool
) -> None:
    given_, success, failure, delay = notify
    dsn = message_pb2.RecipientDsn(
        notify_given=given_ or never,
        notify_never=never,
        notify_success=success and not never,
        notify_failure=failure and not never,
        notify_delay=delay and not never,
        orcpt_type=addr_type,
        orcpt_address=address,
    )
    the_job = job_with(dsn=dsn)

    parameters = dsn_rcpt_parameters(the_job, RCPT, offered=True)

    assert_one_command_line(b"RCPT TO:", RCPT, parameters)
    found = named(parameters)
    assert set(found) <= {"NOTIFY", "ORCPT"}
    if dsn.notify_given:
        assert found.get("NOTIFY") == dsn_parameters.notify_value(dsn)
    else:
        assert "NOTIFY" not in found
    if "ORCPT" in found:
        read = dsn_parameters.parse_recipient_dsn(None, found["ORCPT"])
        assert read is not None and (read.orcpt_type, read.orcpt_address) == (addr_type.lower(), address)
    assert dsn_rcpt_parameters(the_job, RCPT, offered=False) == []
    assert dsn_rcpt_parameters(the_job, "other@dest.test", offered=True) == []  # gave none
    assert list(the_job.recipient_dsn) == [RCPT], "asking for a recipient without DSN must not add one"


@given(envid=PRINTABLE_ASCII)
def test_a_printable_ascii_envid_is_always_passed_on(envid: str) -> None:
    [parameter] = dsn_mail_parameters(job_with(envid), offered=True)
    assert parameter == f"ENVID={dsn_parameters.xtext_encode(envid)}"


@given(address=PRINTABLE_ASCII, addr_type=st.sampled_from(["rfc822", "utf-8"]))
def test_an_ordinary_orcpt_is_always_passed_on(address: str, addr_type: str) -> None:
    dsn = message_pb2.RecipientDsn(orcpt_type=addr_type, orcpt_address=address)
    [parameter] = dsn_rcpt_parameters(job_with(dsn=dsn), RCPT, offered=True)
    assert parameter == f"ORCPT={dsn_parameters.orcpt_value(dsn)}"


@given(address=UNICODE_ADDRESS)
def test_a_unicode_orcpt_goes_with_escapes_valid_without_smtputf8(address: str) -> None:
    """RFC 6533 §3: utf-8-addr-xtext, so no session needs SMTPUTF8 for it."""
    dsn = message_pb2.RecipientDsn(orcpt_type="utf-8", orcpt_address=address)
    [parameter] = dsn_rcpt_parameters(job_with(dsn=dsn), RCPT, offered=True)
    assert parameter.isascii()
    read = dsn_parameters.parse_recipient_dsn(None, parameter.removeprefix("ORCPT="), smtputf8=False)
    assert read is not None and read.orcpt_address == address


def test_notify_never_and_each_keyword_as_the_client_gave_them() -> None:
    never = message_pb2.RecipientDsn(notify_given=True, notify_never=True)
    delay = message_pb2.RecipientDsn(notify_given=True, notify_delay=True, notify_success=True)
    assert dsn_rcpt_parameters(job_with(dsn=never), RCPT, offered=True) == ["NOTIFY=NEVER"]
    assert dsn_rcpt_parameters(job_with(dsn=delay), RCPT, offered=True) == ["NOTIFY=SUCCESS,DELAY"]


def test_ret_alone_and_nothing_when_the_client_gave_nothing() -> None:
    assert dsn_mail_parameters(job_with(ret=message_pb2.DSN_RET_FULL), offered=True) == ["RET=FULL"]
    assert dsn_mail_parameters(job_with(), offered=True) == []
    assert dsn_rcpt_parameters(job_with(dsn=message_pb2.RecipientDsn()), RCPT, offered=True) == []
