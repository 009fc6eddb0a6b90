"""Why a recipient failed, as a class from a bounded set and hard or soft, for metrics, events, logs and DSNs.

A class is derived from what the failure left, in this order (the first that names a class wins):

1. `expired` (or kubemta's own 4.4.7): the queue-manager gave up after the queue lifetime: EXPIRED.
2. kubemta's own failures, which have no SMTP reply (`smtp_code` 0) and one of the statuses
   the resolver, worker and queue-manager set (`OWN_STATUSES`): their status says exactly
   what happened (4.4.1 no answer, 4.7.5 TLS, 5.1.2 NXDOMAIN, 5.3.4 over the server's SIZE, ...).
3. The reply text (`bounce_texts.STRONG_RULES`): the big providers say more in their text
   than in their codes (Gmail's 5.7.1 is a spam block, a bad reputation or a residential IP).
4. The RFC 3463 enhanced status code (IANA "Enumerated Status Codes" registry: RFC 3463,
   RFC 5248, RFC 7293, RFC 7372, RFC 7505, RFC 8617, RFC 8689), by subject and detail.
5. Weak texts ("try again later") when the status is only `X.Y.0` (other or undefined) or
   a detail kubemta does not know, then that status' subject (X.7.x: policy).
6. The SMTP reply code when there is no enhanced code (RFC 5321 §4.2.2; the worker makes
   a missing one `X.0.0`): 550/551/553 invalid recipient, 552 mailbox full, 421 connection.
7. OTHER.

Hard or soft (`Classification.hard`), the rule the suppression list and the DSN rely on:

- hard: retrying will not help and the address or the sender's setup must change. A
  permanent failure (status class 5, or a 5xx reply without a status) of any class but the
  two below: an invalid recipient, a permanent policy or authentication failure, a
  blocklisting, a message too large, NXDOMAIN or a null MX; and every expired message.
- soft: it may succeed later unchanged. Every temporary (4xx / 4.x.x) failure, and two
  classes even when permanent: MAILBOX_FULL (the big ESPs treat a full mailbox as soft:
  it empties) and RATE_LIMITED (a 5xx "sending quota exceeded" lifts). Also the 5.3.0 an
  operator's delete reports: nothing is wrong with the address or the setup.
"""

import re
from dataclasses import dataclass

from kubemta_common.bounce_classes import BounceClass
from kubemta_common.bounce_texts import normalised, strong_text_class, weak_text_class

__all__ = ["OWN_STATUSES", "BounceClass", "Classification", "classify"]


@dataclass(frozen=True, slots=True)
class Classification:
    """A failure's class and whether it is hard (retrying will not help: suppress, fix the address)."""

    bounce_class: BounceClass
    hard: bool


_STATUS = re.compile(r"([245])\.([0-9]{1,3})\.([0-9]{1,3})")
"""RFC 3463 §2: class "." subject "." detail."""

OWN_STATUSES: dict[str, BounceClass] = {
    "4.4.1": BounceClass.CONNECTION_FAILURE,  # worker: connect refused/timed out, no host answered, deadline
    "4.4.2": BounceClass.CONNECTION_FAILURE,  # worker: connection lost or timed out in a conversation
    "4.4.3": BounceClass.DNS_FAILURE,  # resolver: SERVFAIL, timeout; worker: a job without hosts
    "4.4.5": BounceClass.RATE_LIMITED,  # worker: the destination's concurrency limit stayed full
    "4.4.7": BounceClass.EXPIRED,  # queue-manager: the queue lifetime passed
    "4.7.4": BounceClass.TLS_FAILURE,  # worker: TLS required but STARTTLS not offered or refused
    "4.7.5": BounceClass.TLS_FAILURE,  # worker: handshake or certificate; resolver: MTA-STS allows no MX host
    "5.1.2": BounceClass.DNS_FAILURE,  # resolver: NXDOMAIN
    "5.1.3": BounceClass.INVALID_RECIPIENT,  # worker: a recipient address it cannot send
    "5.1.7": BounceClass.POLICY,  # worker: a sender address it cannot send
    "5.1.10": BounceClass.INVALID_RECIPIENT,  # resolver: null MX (RFC 7505: the domain takes no mail)
    "5.3.0": BounceClass.OTHER,  # an operator deleted the message (kubemta_common.events.deletion)
    "5.3.4": BounceClass.MESSAGE_TOO_LARGE,  # worker: over the server's SIZE (RFC 1870)
    "5.4.4": BounceClass.DNS_FAILURE,  # resolver: no MX host or next hop has an address
    "5.6.3": BounceClass.OTHER,  # worker: 8-bit content the server cannot take, not convertible
    "5.6.7": BounceClass.OTHER,  # worker: SMTPUTF8 needed but not offered (RFC 6531 §3.5)
}
"""kubemta's own statuses for failures without an SMTP reply, and what each means (read from the services)."""

_DELETED_STATUS = "5.3.0"
_EXPIRED_STATUS = "4.4.7"
_SASL = re.compile(r"sasl", re.IGNORECASE)

_BY_SUBJECT_DETAIL: dict[tuple[str, str], BounceClass] = {
    # X.1 addressing (RFC 3463 §3.2; X.1.10 RFC 7505)
    ("1", "1"): BounceClass.INVALID_RECIPIENT,
    ("1", "2"): BounceClass.DNS_FAILURE,
    ("1", "3"): BounceClass.INVALID_RECIPIENT,
    ("1", "4"): BounceClass.INVALID_RECIPIENT,
    ("1", "5"): BounceClass.OTHER,
    ("1", "6"): BounceClass.INVALID_RECIPIENT,
    ("1", "7"): BounceClass.POLICY,
    ("1", "8"): BounceClass.POLICY,
    ("1", "9"): BounceClass.OTHER,
    ("1", "10"): BounceClass.INVALID_RECIPIENT,
    # X.2 mailbox (§3.3)
    ("2", "1"): BounceClass.INVALID_RECIPIENT,
    ("2", "2"): BounceClass.MAILBOX_FULL,
    ("2", "3"): BounceClass.MESSAGE_TOO_LARGE,
    ("2", "4"): BounceClass.OTHER,
    # X.3 mail system (§3.4)
    ("3", "1"): BounceClass.OTHER,
    ("3", "2"): BounceClass.OTHER,
    ("3", "3"): BounceClass.OTHER,
    ("3", "4"): BounceClass.MESSAGE_TOO_LARGE,
    ("3", "5"): BounceClass.OTHER,
    ("3", "6"): BounceClass.OTHER,
    # X.4 network and routing (§3.5)
    ("4", "1"): BounceClass.CONNECTION_FAILURE,
    ("4", "2"): BounceClass.CONNECTION_FAILURE,
    ("4", "3"): BounceClass.DNS_FAILURE,
    ("4", "4"): BounceClass.DNS_FAILURE,
    ("4", "5"): BounceClass.RATE_LIMITED,
    ("4", "6"): BounceClass.OTHER,
    ("4", "7"): BounceClass.EXPIRED,
    # X.5 protocol (§3.6): X.5.3 too many recipients
    ("5", "1"): BounceClass.OTHER,
    ("5", "2"): BounceClass.OTHER,
    ("5", "3"): BounceClass.RATE_LIMITED,
    ("5", "4"): BounceClass.OTHER,
    ("5", "5"): BounceClass.OTHER,
    ("5", "6"): BounceClass.OTHER,
    # X.6 content conversion (§3.7; X.6.7-X.6.10 RFC 6531/RFC 6858): a format the server cannot take
    ("6", "1"): BounceClass.OTHER,
    ("6", "2"): BounceClass.OTHER,
    ("6", "3"): BounceClass.OTHER,
    ("6", "4"): BounceClass.OTHER,
    ("6", "5"): BounceClass.OTHER,
    ("6", "6"): BounceClass.OTHER,
    ("6", "7"): BounceClass.OTHER,
    ("6", "8"): BounceClass.OTHER,
    ("6", "9"): BounceClass.OTHER,
    ("6", "10"): BounceClass.OTHER,
    # X.7 security and policy (§3.8; RFC 4954, RFC 5248, RFC 7293, RFC 7372, RFC 8617, RFC 8689)
    # X.7.1 (delivery not authorized) is every filter's catch-all, greylisting's too ("451 4.7.1 Try again
    # later"): like X.7.0 it is policy only when no text says more (_BY_SUBJECT).
    ("7", "2"): BounceClass.POLICY,
    ("7", "3"): BounceClass.POLICY,
    ("7", "4"): BounceClass.TLS_FAILURE,  # security features not supported
    ("7", "5"): BounceClass.TLS_FAILURE,  # cryptographic failure
    ("7", "6"): BounceClass.TLS_FAILURE,  # cryptographic algorithm not supported
    ("7", "7"): BounceClass.POLICY,
    ("7", "8"): BounceClass.POLICY,  # authentication credentials invalid
    ("7", "9"): BounceClass.POLICY,
    ("7", "10"): BounceClass.TLS_FAILURE,  # encryption needed
    ("7", "11"): BounceClass.TLS_FAILURE,  # encryption required for the authentication mechanism
    ("7", "12"): BounceClass.POLICY,
    ("7", "13"): BounceClass.POLICY,  # (sender's) user account disabled
    ("7", "14"): BounceClass.POLICY,
    ("7", "15"): BounceClass.POLICY,
    ("7", "16"): BounceClass.MESSAGE_TOO_LARGE,  # message too big for the specified priority
    ("7", "17"): BounceClass.INVALID_RECIPIENT,  # RFC 7293: mailbox owner has changed
    ("7", "18"): BounceClass.INVALID_RECIPIENT,  # RFC 7293: domain owner has changed
    ("7", "19"): BounceClass.OTHER,
    ("7", "20"): BounceClass.POLICY,  # RFC 7372: no passing DKIM signature
    ("7", "21"): BounceClass.POLICY,
    ("7", "22"): BounceClass.POLICY,
    ("7", "23"): BounceClass.POLICY,  # SPF validation failed
    ("7", "24"): BounceClass.POLICY,  # SPF validation error
    ("7", "25"): BounceClass.POLICY,  # reverse DNS validation failed
    ("7", "26"): BounceClass.POLICY,  # multiple authentication checks failed (Gmail: DMARC, unauthenticated)
    ("7", "27"): BounceClass.POLICY,  # sender address has null MX
    ("7", "28"): BounceClass.RATE_LIMITED,  # mail flood detected (Gmail 4.7.28: rate limited)
    ("7", "29"): BounceClass.POLICY,  # RFC 8617: ARC validation failure
    ("7", "30"): BounceClass.TLS_FAILURE,  # RFC 8689: REQUIRETLS support required
}
"""Specific statuses, by (subject, detail), whatever their class (4 or 5)."""

_BY_SUBJECT: dict[str, BounceClass] = {
    "1": BounceClass.INVALID_RECIPIENT,
    "2": BounceClass.OTHER,
    "3": BounceClass.OTHER,
    "4": BounceClass.CONNECTION_FAILURE,
    "5": BounceClass.OTHER,
    "6": BounceClass.OTHER,
    "7": BounceClass.POLICY,
}
"""X.Y.0 (other or undefined) and details kubemta does not know (Microsoft's 5.7.606 ...), by subject."""

_BY_REPLY_CODE: dict[int, BounceClass] = {
    421: BounceClass.CONNECTION_FAILURE,  # service not available, closing transmission channel
    454: BounceClass.TLS_FAILURE,  # RFC 3207 §4: TLS not available due to temporary reason
    530: BounceClass.POLICY,  # RFC 4954 §6: authentication required (or STARTTLS first: a text says so)
    534: BounceClass.POLICY,  # RFC 4954 §6: authentication mechanism is too weak
    535: BounceClass.POLICY,  # RFC 4954 §6: authentication credentials invalid
    538: BounceClass.TLS_FAILURE,  # RFC 4954 §6: encryption required for the authentication mechanism
    550: BounceClass.INVALID_RECIPIENT,  # mailbox unavailable (not found, no access)
    551: BounceClass.INVALID_RECIPIENT,  # user not local
    552: BounceClass.MAILBOX_FULL,  # exceeded storage allocation
    553: BounceClass.INVALID_RECIPIENT,  # mailbox name not allowed
}
"""RFC 5321 §4.2.2 reply codes, for replies without an enhanced status code."""

_SOFT_EVEN_WHEN_PERMANENT = frozenset({BounceClass.MAILBOX_FULL, BounceClass.RATE_LIMITED})


def _class(smtp_code: int, status: re.Match[str] | None, diagnostic: str) -> BounceClass:
    text = normalised(diagnostic)
    found = strong_text_class(text)
    if found is not None:
        return found
    subject, detail = (str(int(status.group(2))), str(int(status.group(3)))) if status is not None else ("0", "0")
    specific = _BY_SUBJECT_DETAIL.get((subject, detail))
    if specific is not None:
        return specific
    weak = weak_text_class(text)
    if weak is not None:
        return weak
    by_subject = _BY_SUBJECT.get(subject)
    if by_subject is not None:
        return by_subject
    return _BY_REPLY_CODE.get(smtp_code, BounceClass.OTHER)


def classify(smtp_code: int, status: str, diagnostic: str, *, expired: bool = False) -> Classification:
    """The class of one recipient's failure: `smtp_code` (0 without a reply), `status` (e.g. "5.1.1"),
    `diagnostic` (the reply text or kubemta's own), `expired` when it outlived the queue lifetime.

    Never raises: every input, however hostile, gets a member of BounceClass (read at most
    `bounce_texts.TEXT_LIMIT` characters of `diagnostic`)."""
    if expired or (smtp_code == 0 and status == _EXPIRED_STATUS):
        return Classification(BounceClass.EXPIRED, hard=True)
    parsed = _STATUS.fullmatch(status)
    permanent = parsed.group(1) == "5" if parsed is not None else 500 <= smtp_code < 600
    own = OWN_STATUSES.get(status) if smtp_code == 0 else None
    if own is not None:
        if status == _DELETED_STATUS:  # an operator's delete: nothing to suppress or fix
            return Classification(own, hard=False)
        if own is BounceClass.TLS_FAILURE and _SASL.search(diagnostic[:200]):
            own = BounceClass.POLICY  # relay_auth: the relayhost offers no SASL mechanism kubemta speaks
        found = own
    else:
        found = _class(smtp_code, parsed, diagnostic)
    return Classification(found, hard=permanent and found not in _SOFT_EVEN_WHEN_PERMANENT)
