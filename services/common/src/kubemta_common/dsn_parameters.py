"""The SMTP DSN extension's parameters (RFC 3461), read from a client and written to a next hop.

MAIL FROM takes `RET=FULL|HDRS` (§4.3) and `ENVID=<xtext>` (§4.4); RCPT TO takes
`NOTIFY=NEVER|<SUCCESS,FAILURE,DELAY>` (§4.1) and `ORCPT=<addr-type>;<xtext>` (§4.2). The values
come from outsiders: each is checked against its grammar and length and refused with Postfix's
replies (`501 5.5.4 Bad NOTIFY parameter syntax`, ...), and what travels on the bus is decoded
(`message_pb2.RecipientDsn`, `AcceptedMessage.envid/ret`), so every place that writes a value again
encodes it for where it goes: xtext for a next hop, a DSN field for a report.

xtext (§4): printable ASCII except "+" and "=" as itself, anything else as "+" and two upper-case hex
digits; the octets it stands for are read as UTF-8 (what `xtext_encode` writes), so a decoded value
always encodes back to a value that decodes to it, and never holds what a protobuf string cannot.
An ORCPT of addr-type `utf-8` (RFC 6533 §3) may also hold `\\x{HEX}` escapes, and raw UTF-8 when
the session said SMTPUTF8; decoded, it is the Unicode address.
"""

import re
from typing import Literal

from kubemta.v1 import message_pb2

ENVID_MAX_LENGTH = 100
"""RFC 3461 §4.4: an ENVID is at most 100 characters (as written, xtext-encoded)."""

ORCPT_MAX_LENGTH = 500
"""RFC 3461 §4.2: an ORCPT is at most 500 characters (as written, addr-type and xtext)."""

NOTIFY_KEYWORDS = ("SUCCESS", "FAILURE", "DELAY")

_XTEXT = re.compile(r"(?:[!-*,-<>-~]|\+[0-9A-F]{2})*")
"""xtext: "!".."~" except "+" and "=", or "+" HEX HEX (upper case, §4)."""

_HEXCHAR = re.compile(r"\+([0-9A-F]{2})")
_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+")
_UTF8_ESCAPE = re.compile(r"\\x\{([0-9A-F]{2,6})\}")
_UTF8_FORBIDDEN = {code: None for code in [*range(0, 33), 0x2B, 0x3D, 0x5C, 0x7F]}
"""What utf-8-addr-xtext never holds as itself: controls, space, "+", "=", "\\" (RFC 6533 §3)."""

DsnKind = Literal["success", "failure", "delay"]


class DsnParameterError(ValueError):
    """A DSN parameter the client got wrong; `reply` is the SMTP reply for it."""

    def __init__(self, reply: str) -> None:
        super().__init__(reply)
        self.reply = reply


def _bad(name: str) -> DsnParameterError:
    return DsnParameterError(f"501 5.5.4 Bad {name} parameter syntax")


def xtext_decode(value: str) -> str:
    """The text an xtext stands for, its octets read as UTF-8; ValueError when `value` is not xtext or the
    octets are not UTF-8 (`+C3+A9` is "é"; a lone `+FF` is refused: read as Latin-1 it would come back from
    `xtext_encode` as another value)."""
    if not _XTEXT.fullmatch(value):
        raise ValueError("not xtext")
    parts = _HEXCHAR.split(value)  # text, hex digits, text, ..., text
    octets = b"".join(bytes([int(part, 16)]) if index % 2 else part.encode("ascii") for index, part in enumerate(parts))
    return octets.decode("utf-8")  # UnicodeDecodeError is a ValueError


def xtext_encode(text: str) -> str:
    """`text` as xtext: "+" HEX HEX for "+", "=", controls, space and every byte of a non-ASCII character."""
    encoded: list[str] = []
    for byte in text.encode("utf-8"):
        if 33 <= byte <= 126 and byte not in (0x2B, 0x3D):
            encoded.append(chr(byte))
        else:
            encoded.append(f"+{byte:02X}")
    return "".join(encoded)


def parse_ret(value: object) -> message_pb2.DsnRet.ValueType:
    """MAIL FROM's RET: FULL or HDRS (any case); DSN_RET_UNSPECIFIED when not given."""
    if value is None:
        return message_pb2.DSN_RET_UNSPECIFIED
    if not isinstance(value, str):  # aiosmtpd gives True for a keyword without "="
        raise _bad("RET")
    match value.upper():
        case "FULL":
            return message_pb2.DSN_RET_FULL
        case "HDRS":
            return message_pb2.DSN_RET_HDRS
    raise _bad("RET")


def parse_envid(value: object) -> str:
    """MAIL FROM's ENVID, decoded; "" when not given. At most 100 characters of xtext, printable ASCII decoded."""
    if value is None:
        return ""
    if not isinstance(value, str) or not value or len(value) > ENVID_MAX_LENGTH:
        raise _bad("ENVID")
    try:
        decoded = xtext_decode(value)
    except ValueError:
        raise _bad("ENVID") from None
    if not all(" " <= char <= "~" for char in decoded):
        raise _bad("ENVID")
    return decoded


def _notify(value: object, dsn: message_pb2.RecipientDsn) -> None:
    if not isinstance(value, str) or not value:
        raise _bad("NOTIFY")
    keywords = [keyword.upper() for keyword in value.split(",")]
    if keywords == ["NEVER"]:
        dsn.notify_given = dsn.notify_never = True
        return
    if not keywords or any(keyword not in NOTIFY_KEYWORDS for keyword in keywords):
        raise _bad("NOTIFY")  # NEVER with anything else, an unknown or an empty keyword
    dsn.notify_given = True
    dsn.notify_success = "SUCCESS" in keywords
    dsn.notify_failure = "FAILURE" in keywords
    dsn.notify_delay = "DELAY" in keywords


def _decode_utf8_address(value: str) -> str:
    """RFC 6533 §3: utf-8-addr-xtext / utf-8-addr-unitext: graphic ASCII but "+", "=" and "\\" as itself,
    `\\x{HEX}` escapes for anything, raw UTF-8 (unitext) for non-ASCII."""
    if _UTF8_ESCAPE.sub("", value).translate(_UTF8_FORBIDDEN) != _UTF8_ESCAPE.sub("", value):
        raise ValueError("not utf-8-addr-xtext")

    def code_point(match: re.Match[str]) -> str:
        number = int(match.group(1), 16)
        if number > 0x10FFFF or 0xD800 <= number <= 0xDFFF:
            raise ValueError("not a code point")
        return chr(number)

    return _UTF8_ESCAPE.sub(code_point, value)


def _is_unicode(text: str) -> bool:
    """False when `text` holds a lone surrogate: aiosmtpd keeps a command's bytes that are not UTF-8 as such
    (surrogateescape), and a protobuf string cannot carry them."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _orcpt(value: object, dsn: message_pb2.RecipientDsn, smtputf8: bool) -> None:
    if not isinstance(value, str) or not value or len(value) > ORCPT_MAX_LENGTH:
        raise _bad("ORCPT")
    addr_type, separator, address = value.partition(";")
    if not separator or not _ATOM.fullmatch(addr_type) or not address:
        raise _bad("ORCPT")
    try:
        if addr_type.lower() == "utf-8":
            if not smtputf8 and not address.isascii():
                raise ValueError("raw UTF-8 without SMTPUTF8")
            decoded = _decode_utf8_address(address)
        else:
            decoded = xtext_decode(address)
    except ValueError:
        raise _bad("ORCPT") from None
    if not decoded or any(char < " " or char == "\x7f" for char in decoded) or not _is_unicode(decoded):
        raise _bad("ORCPT")
    dsn.orcpt_type = addr_type.lower()
    dsn.orcpt_address = decoded


def parse_recipient_dsn(notify: object, orcpt: object, *, smtputf8: bool = False) -> message_pb2.RecipientDsn | None:
    """RCPT TO's NOTIFY and ORCPT (None: not given) as a RecipientDsn; None when neither was given."""
    if notify is None and orcpt is None:
        return None
    dsn = message_pb2.RecipientDsn()
    if notify is not None:
        _notify(notify, dsn)
    if orcpt is not None:
        _orcpt(orcpt, dsn, smtputf8)
    return dsn


def recipient_dsn(job: message_pb2.DeliveryJob, recipient: str) -> message_pb2.RecipientDsn | None:
    """The DSN parameters the sender gave `recipient` (None: none), without adding an entry to the job's map
    (indexing a protobuf map adds the key it is asked for)."""
    return job.recipient_dsn[recipient] if recipient in job.recipient_dsn else None


def wants(dsn: message_pb2.RecipientDsn | None, kind: DsnKind) -> bool:
    """Whether the sender asked for a DSN of `kind` for this recipient. Without NOTIFY: failure and delay
    (RFC 3461 §4.1 leaves the default to the MTA; Postfix's and kubemta's is both), never success."""
    if dsn is None or not dsn.notify_given:
        return kind != "success"
    if dsn.notify_never:
        return False
    return {"success": dsn.notify_success, "failure": dsn.notify_failure, "delay": dsn.notify_delay}[kind]


def notify_value(dsn: message_pb2.RecipientDsn | None) -> str | None:
    """The NOTIFY parameter to give a next hop that offers DSN; None when the client gave none."""
    if dsn is None or not dsn.notify_given:
        return None
    if dsn.notify_never:
        return "NEVER"
    chosen = [
        keyword
        for keyword, wanted in zip(
            NOTIFY_KEYWORDS, (dsn.notify_success, dsn.notify_failure, dsn.notify_delay), strict=True
        )
        if wanted
    ]
    return ",".join(chosen) or None


def orcpt_value(dsn: message_pb2.RecipientDsn | None) -> str | None:
    """The ORCPT parameter to give a next hop, xtext-encoded (a utf-8 address with `\\x{HEX}` escapes for its
    non-ASCII characters, which any session takes); None when the client gave none."""
    if dsn is None or not dsn.orcpt_address:
        return None
    if dsn.orcpt_type == "utf-8":
        encoded = "".join(
            f"\\x{{{ord(char):02X}}}" if ord(char) > 0x7E or ord(char) in _UTF8_FORBIDDEN else char
            for char in dsn.orcpt_address
        )
    else:
        encoded = xtext_encode(dsn.orcpt_address)
    value = f"{dsn.orcpt_type};{encoded}"
    return value if len(value) <= ORCPT_MAX_LENGTH else None


def envid_value(envid: str) -> str | None:
    """The ENVID parameter to give a next hop; None when there is none (or it no longer fits 100 characters)."""
    if not envid:
        return None
    encoded = xtext_encode(envid)
    return encoded if len(encoded) <= ENVID_MAX_LENGTH else None


def ret_value(ret: message_pb2.DsnRet.ValueType) -> str | None:
    """The RET parameter to give a next hop; None when the client gave none."""
    return {message_pb2.DSN_RET_FULL: "FULL", message_pb2.DSN_RET_HDRS: "HDRS"}.get(ret)
