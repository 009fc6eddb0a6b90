"""Domain names as the domain check takes them: validated, lower case, A-labels, no final dot.

A sending domain must be a host-style name (RFC 5321 §4.1.2: letters, digits and hyphens,
no hyphen at either end of a label) of at least two labels; Unicode labels are turned
into A-labels with IDNA (stdlib `encodings.idna`, RFC 3490), refusing labels IDNA would
have to change (a disguised label is another domain). The error names the problem.
"""

import re
from encodings import idna

MAX_NAME_LENGTH = 253
"""RFC 1035 §2.3.4: 255 octets on the wire, i.e. 253 characters written without the final dot."""
MAX_LABEL_LENGTH = 63
"""RFC 1035 §2.3.4."""
_LDH_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\Z")
ACE_PREFIX = "xn--"
"""RFC 3490 §5: the prefix of an A-label."""


class InvalidDomainError(ValueError):
    """Not a valid sending domain name; the message says why."""


def normalize_domain(text: str) -> str:
    """`text` as a lower-case A-label domain without the final dot; InvalidDomainError when it is not one."""
    name = text.strip()
    if name.endswith("."):
        name = name[:-1]
    if not name:
        raise InvalidDomainError("empty domain name")
    labels = [_label(label, text) for label in name.split(".")]
    if len(labels) < 2:
        raise InvalidDomainError(f"{text!r} is not a fully qualified domain name (expected e.g. example.com)")
    if labels[-1].isdigit():
        raise InvalidDomainError(f"{text!r} is an IP address or ends in a numeric label, not a domain name")
    domain = ".".join(labels)
    if len(domain) > MAX_NAME_LENGTH:
        raise InvalidDomainError(f"domain name longer than {MAX_NAME_LENGTH} characters ({len(domain)})")
    return domain


def _label(label: str, text: str) -> str:
    if not label:
        raise InvalidDomainError(f"empty label in {text!r}")
    if not label.isascii():
        label = _a_label(label)
    label = label.lower()
    if len(label) > MAX_LABEL_LENGTH:
        raise InvalidDomainError(f"label {label[:20]!r}... is longer than {MAX_LABEL_LENGTH} characters")
    if not _LDH_LABEL.match(label):
        raise InvalidDomainError(
            f"invalid label {label!r}: only letters, digits and inner hyphens are allowed (RFC 5321 §4.1.2)"
        )
    if label.startswith(ACE_PREFIX):
        try:
            idna.ToUnicode(label)
        except UnicodeError as exc:
            raise InvalidDomainError(f"invalid A-label {label!r}: {exc}") from None
    return label


def _a_label(label: str) -> str:
    lowered = label.lower()
    try:
        prepared = idna.nameprep(lowered)
        if prepared != lowered:
            raise InvalidDomainError(f"label {label!r} is not in IDNA normal form (IDNA maps it to {prepared!r})")
        return idna.ToASCII(lowered).decode("ascii")
    except UnicodeError as exc:
        raise InvalidDomainError(f"label {label!r} cannot be encoded with IDNA: {exc}") from None
