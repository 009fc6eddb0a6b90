"""The `Received:` trace header the ingress prepends to every accepted message.

RFC 5321 section 4.4 (Time-stamp-line) with the protocol names of RFC 3848 and
RFC 6531 section 3.7.3; folded with CRLF + TAB (RFC 5322 section 2.2.3), in the
shape Postfix writes (continuation lines start with a TAB):

    Received: from client.example ([192.0.2.1])
        by mx.example.org (kubemta) with ESMTP id 0JcKx9mQ3b7hTfWp
        for <user@example.org>; Tue, 10 Sep 2024 12:00:00 +0000
"""

import functools
import ipaddress
import re
from datetime import datetime, timedelta
from email.utils import format_datetime

from kubemta_ingress.content import has_bare_line_ending
from kubemta_ingress.policy import IPAddress, ip_text

_NOT_HELO_TEXT = re.compile(r"[^!-'*-\[\]-~]")
"""What `safe_helo` replaces: anything but printable ASCII (! to ~), and the comment delimiters ( ) and \\."""

FOLD = "\r\n\t"


def protocol_name(*, extended: bool, smtputf8: bool, tls: bool, authenticated: bool) -> str:
    """The `with` protocol: SMTP, ESMTP[S][A] (RFC 3848) or UTF8SMTP[S][A] (RFC 6531 section 3.7.3)."""
    if not extended:
        return "SMTP"
    base = "UTF8SMTP" if smtputf8 else "ESMTP"
    return base + ("S" if tls else "") + ("A" if authenticated else "")


def address_literal(address: IPAddress) -> str:
    """An RFC 5321 section 4.1.3 address literal: `[192.0.2.1]` or `[IPv6:2001:db8::1]`."""
    if isinstance(address, ipaddress.IPv6Address):
        return f"[IPv6:{address.compressed}]"
    return f"[{ip_text(address)}]"


def safe_helo(helo: str | None) -> str:
    """The client's HELO name, reduced to printable ASCII without comment delimiters."""
    if not helo:
        return "unknown"
    return _NOT_HELO_TEXT.sub("?", helo)


@functools.lru_cache(maxsize=4)
def _date(when: datetime, offset: timedelta | None) -> str:
    """The RFC 5322 date-time of `when` (whole seconds): the same for every message within a second. `offset`
    is part of the key: datetimes of one instant in two time zones are equal, their texts are not."""
    return format_datetime(when)


def received_header(
    *,
    helo: str | None,
    client: IPAddress | None,
    hostname: str,
    protocol: str,
    queue_id: str,
    recipients: list[str],
    when: datetime,
) -> bytes:
    """The complete header field, ending in CRLF; `for` is given only for a single recipient.

    No client text can put a bare CR or LF into it (the HELO name is reduced by
    `safe_helo`, an unprintable recipient is left out); a header that would hold
    one (or a NUL) anyway raises ValueError rather than being prepended to a message.
    """
    from_clause = f"from {safe_helo(helo)}"
    if client is not None:
        from_clause += f" ({address_literal(client)})"
    by_clause = f"by {hostname} (kubemta) with {protocol} id {queue_id}"
    date = _date(when.replace(microsecond=0), when.utcoffset())
    if len(recipients) == 1 and recipients[0].isprintable():
        text = f"Received: {from_clause}{FOLD}{by_clause}{FOLD}for <{recipients[0]}>; {date}\r\n"
    else:
        text = f"Received: {from_clause}{FOLD}{by_clause};{FOLD}{date}\r\n"
    header = text.encode("utf-8")
    if has_bare_line_ending(header) or b"\0" in header:
        raise ValueError("a Received header with a bare CR or LF or a NUL")  # never prepend a smuggling vector
    return header
