"""kubemta_common.dsn_parameters: RFC 3461's MAIL and RCPT parameters read from hostile clients and written again.

Each parse_* either returns a value or raises DsnParameterError carrying Postfix's reply; what it returns
encodes (ret_value, envid_value, notify_value, orcpt_value) to a parameter that parses back to the same.
"""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kubemta.v1 import message_pb2
from kubemta_common.dsn_parameters import (
    ENVID_MAX_LENGTH,
    ORCPT_MAX_LENGTH,
    DsnParameterError,
    envid_value,
    notify_value,
    orcpt_value,
    parse_envid,
    parse_recipient_dsn,
    parse_ret,
    ret_value,
    wants,
    xtext_decode,
    xtext_encode,
)

BAD_ENVID = "501 5.5.4 Bad ENVID parameter syntax"
BAD_NOTIFY = "501 5.5.4 Bad NOTIFY parameter syntax"
BAD_ORCPT = "501 5.5.4 Bad ORCPT parameter syntax"
BAD_RET = "501 5.5.4 Bad RET parameter syntax"


def refused(reply: str, parse: object, *args: object, **kwargs: object) -> None:
    assert callable(parse)
    with pytest.raises(DsnParameterError) as caught:
        parse(*args, **kwargs)
    assert caught.value.reply == reply


# -- xtext (RFC 3461 section 4) --


@given(st.text())
def test_xtext_round_trip(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return  # a lone surrogate is no text a client can send
    encoded = xtext_encode(text)
    assert encoded.isascii() and " " not in encoded and "=" not in encoded
    assert xtext_decode(encoded) == text


def test_xtext_examples() -> None:
    assert xtext_encode("bob+x=y z@example.com") == "bob+2Bx+3Dy+20z@example.com"
    assert xtext_decode("bob+2Bx@example.com") == "bob+x@example.com"
    assert xtext_encode("jörg") == "j+C3+B6rg"
    assert xtext_decode("j+C3+B6rg") == "jörg"


@pytest.mark.parametrize("value", ["a+", "a+2", "a+2b", "a+ZZ", "a=b", "a b", "é", "+FF", "+C3", "a\x00b", "a\r\n"])
def test_not_xtext(value: str) -> None:
    with pytest.raises(ValueError):
        xtext_decode(value)


# -- RET and ENVID (MAIL FROM) --


def test_ret() -> None:
    assert parse_ret(None) == message_pb2.DSN_RET_UNSPECIFIED
    assert parse_ret("FULL") == parse_ret("full") == message_pb2.DSN_RET_FULL
    assert parse_ret("Hdrs") == message_pb2.DSN_RET_HDRS
    for value in ("", "NONE", "FULL,HDRS", "HDRS ", True):
        refused(BAD_RET, parse_ret, value)


def test_envid_length_is_counted_as_written() -> None:
    assert parse_envid(None) == ""
    assert parse_envid("a" * ENVID_MAX_LENGTH) == "a" * ENVID_MAX_LENGTH
    refused(BAD_ENVID, parse_envid, "a" * (ENVID_MAX_LENGTH + 1))
    assert parse_envid("+2B" * 33) == "+" * 33  # 99 characters written
    refused(BAD_ENVID, parse_envid, "+2B" * 34)  # 102 written, though 34 decoded


@pytest.mark.parametrize(
    "value",
    ["", True, "a+", "a=b", "+00", "a+0Db", "a+0A", "+7F", "+C3+A9", "é", "a b", "a\tb", "a\x00b", "+1B[31m"],
)
def test_envid_refused(value: object) -> None:
    refused(BAD_ENVID, parse_envid, value)


def test_envid_decodes_printable_ascii_with_spaces() -> None:
    assert parse_envid("QQ314159") == "QQ314159"
    assert parse_envid("order+2B42+20x") == "order+42 x"


# -- NOTIFY (RCPT TO) --


def notify(value: object) -> message_pb2.RecipientDsn:
    dsn = parse_recipient_dsn(value, None)
    assert dsn is not None
    return dsn


@pytest.mark.parametrize(
    ("value", "success", "failure", "delay"),
    [
        ("SUCCESS", True, False, False),
        ("failure", False, True, False),
        ("Delay", False, False, True),
        ("SUCCESS,DELAY", True, False, True),
        ("DELAY,SUCCESS,FAILURE", True, True, True),
        ("success,success", True, False, False),
    ],
)
def test_notify_combinations(value: str, success: bool, failure: bool, delay: bool) -> None:
    dsn = notify(value)
    assert dsn.notify_given and not dsn.notify_never
    assert (dsn.notify_success, dsn.notify_failure, dsn.notify_delay) == (success, failure, delay)
    assert (wants(dsn, "success"), wants(dsn, "failure"), wants(dsn, "delay")) == (success, failure, delay)


def test_notify_never_alone() -> None:
    dsn = notify("never")
    assert dsn.notify_given and dsn.notify_never
    assert not any(wants(dsn, kind) for kind in ("success", "failure", "delay"))
    assert notify_value(dsn) == "NEVER"


@pytest.mark.parametrize(
    "value",
    ["", True, "NEVER,SUCCESS", "FAILURE,NEVER", "NEVER,NEVER", "SUCCESS,", ",DELAY", "SUCCESS,,DELAY", "BOUNCE",
     "SUCCESS;DELAY", "SUCCESS DELAY", "SUCC\x00ESS"],
)  # fmt: skip
def test_notify_refused(value: object) -> None:
    refused(BAD_NOTIFY, parse_recipient_dsn, value, None)


def test_no_parameters_is_none_and_the_default() -> None:
    assert parse_recipient_dsn(None, None) is None
    assert [wants(None, kind) for kind in ("success", "failure", "delay")] == [False, True, True]
    assert notify_value(None) is None and orcpt_value(None) is None


# -- ORCPT (RCPT TO) --


def orcpt(value: str, *, smtputf8: bool = False) -> tuple[str, str]:
    dsn = parse_recipient_dsn(None, value, smtputf8=smtputf8)
    assert dsn is not None and not dsn.notify_given
    return dsn.orcpt_type, dsn.orcpt_address


def test_orcpt_rfc822() -> None:
    assert orcpt("rfc822;bob+2Bx@example.com") == ("rfc822", "bob+x@example.com")
    assert orcpt("RFC822;Bob@Example.COM") == ("rfc822", "Bob@Example.COM")  # the type folds, the address not
    assert orcpt("x-local;some+20thing") == ("x-local", "some thing")


def test_orcpt_utf8_escapes_and_raw_utf8_only_with_smtputf8() -> None:
    assert orcpt("utf-8;j\\x{F6}rg@example.com") == ("utf-8", "jörg@example.com")
    assert orcpt("UTF-8;\\x{1F600}@example.com") == ("utf-8", "\U0001f600@example.com")
    assert orcpt("utf-8;jörg@example.com", smtputf8=True) == ("utf-8", "jörg@example.com")
    refused(BAD_ORCPT, parse_recipient_dsn, None, "utf-8;jörg@example.com", smtputf8=False)


def test_orcpt_length_is_counted_as_written() -> None:
    prefix = "rfc822;"
    longest = prefix + "a" * (ORCPT_MAX_LENGTH - len(prefix) - len("@x")) + "@x"
    assert len(longest) == ORCPT_MAX_LENGTH
    assert orcpt(longest)[1].endswith("@x")
    refused(BAD_ORCPT, parse_recipient_dsn, None, "a" + longest)


@pytest.mark.parametrize(
    "value",
    [
        "", "rfc822", "rfc822;", ";bob@example.com", "rfc 822;bob@x", "rfc822;bob=x@x", "rfc822;a b@x",
        "rfc822;a+0Db@x", "rfc822;a+0Ab@x", "rfc822;a+00b@x", "rfc822;a\x00b@x", "rfc822;a\rb@x", "rfc822;+FF@x",
        "rfc822;jörg@x", "utf-8;\\x{0}@x", "utf-8;\\x{D800}@x", "utf-8;\\x{110000}@x", "utf-8;a\\b@x",
        "utf-8;a+b@x", "utf-8;a\\x{0A}b@x", "utf-8;a b@x", "utf-8;\\x{7F}@x",
    ],
)  # fmt: skip
def test_orcpt_refused(value: str) -> None:
    refused(BAD_ORCPT, parse_recipient_dsn, None, value, smtputf8=True)


def test_orcpt_raw_bytes_that_are_not_utf8_are_refused() -> None:
    """aiosmtpd keeps a command's invalid UTF-8 as lone surrogates; a protobuf string cannot carry them."""
    refused(BAD_ORCPT, parse_recipient_dsn, None, "utf-8;a\udcffb@x", smtputf8=True)


def test_notify_and_orcpt_together() -> None:
    dsn = parse_recipient_dsn("SUCCESS,FAILURE", "rfc822;bob@example.com")
    assert dsn is not None
    assert dsn.notify_success and dsn.notify_failure and not dsn.notify_delay
    assert (dsn.orcpt_type, dsn.orcpt_address) == ("rfc822", "bob@example.com")
    refused(BAD_NOTIFY, parse_recipient_dsn, "NEVER,DELAY", "rfc822;bob@example.com")
    refused(BAD_ORCPT, parse_recipient_dsn, "NEVER", "rfc822")


# -- hostile input: only DsnParameterError, and what is returned writes back as itself --

parameter_text = st.text(st.characters(codec="utf-8"), max_size=120) | st.from_regex(
    r"(?:[!-*,-<>-~]|\+[0-9A-F]{2}|\\x\{[0-9A-F]{2,6}\})*", fullmatch=True
).map(lambda text: text[:120])
orcpt_text = st.builds(
    lambda kind, address: f"{kind};{address}", st.sampled_from(["rfc822", "utf-8", "UTF-8", "x-y", ""]), parameter_text
)


@given(st.one_of(st.none(), st.just(True), parameter_text))
def test_parse_ret_never_raises_anything_else(value: object) -> None:
    try:
        ret = parse_ret(value)
    except DsnParameterError as error:
        assert error.reply == BAD_RET
        return
    written = ret_value(ret)
    assert (written is None) == (value is None)
    assert written is None or parse_ret(written) == ret


@given(st.one_of(st.none(), st.just(True), parameter_text))
def test_parse_envid_never_raises_anything_else(value: object) -> None:
    try:
        envid = parse_envid(value)
    except DsnParameterError as error:
        assert error.reply == BAD_ENVID
        return
    assert envid.isascii() and envid.isprintable()
    written = envid_value(envid)
    assert (written is None) == (value is None)
    assert written is None or parse_envid(written) == envid


notify_text = st.lists(st.sampled_from(["SUCCESS", "never", "Delay", "failure", "", "x"])).map(",".join)


@given(
    st.one_of(st.none(), st.just(True), parameter_text, notify_text),
    st.one_of(st.none(), st.just(True), orcpt_text),
    st.booleans(),
)
def test_parse_recipient_dsn_never_raises_anything_else(notify: object, orcpt: object, smtputf8: bool) -> None:
    try:
        dsn = parse_recipient_dsn(notify, orcpt, smtputf8=smtputf8)
    except DsnParameterError as error:
        assert error.reply in (BAD_NOTIFY, BAD_ORCPT)
        return
    if dsn is None:
        assert notify is None and orcpt is None
        return
    dsn.SerializeToString()  # every string it holds is one protobuf can carry
    again = parse_recipient_dsn(notify_value(dsn), orcpt_value(dsn), smtputf8=False)  # an ASCII-only next hop
    assert again == dsn
