"""Recipient verification at RCPT: an unknown user of a local domain is refused, never bounced later.

Accepting any local part of a local domain turns every unknown user into a bounce
(DSN) to the envelope sender, which is usually forged: backscatter, which gets the
sending IPs blocklisted. So, as Postfix does with `local_recipient_maps` and
`reject_unverified_recipient`, a recipient of a local domain is checked at RCPT:

- from the domain's recipient map (`KUBEMTA_RECIPIENT_MAPS`, recipient_map.py) when it
  has one: not listed -> `550 5.1.1 <addr>: Recipient address rejected: User unknown in
  local recipient table`;
- else, for a domain routed over LMTP (`KUBEMTA_TRANSPORTS`, e.g.
  `example.com=lmtp:[dovecot]:24`), by asking the mailbox server (an LMTP RCPT probe,
  recipient_probes.py), unless `KUBEMTA_RECIPIENT_VERIFY=false`: refused there ->
  `550 5.1.1 <addr>: Recipient address rejected: undeliverable address: host X said: ...`;
  no answer (server down, too slow, a 4xx) -> `450 4.1.1 <addr>: Recipient address
  rejected: unverified address: ...` (Postfix' `unverified_recipient_tempfail_action`),
  so the sending MTA retries. A temporary failure is never a 5xx.
- a local domain with neither accepts every local part, as before; the service warns
  at start-up naming those domains.

Every client is verified, trusted ones (authenticated, relay networks) too: an unknown
user is unknown for everyone (Postfix checks them alike). `postmaster` at any local
domain (RFC 5321 section 4.5.1) is always accepted, without a look-up. A refusal
counts against the session's error limit (`KUBEMTA_MAX_ERRORS`) like any 5xx, which
bounds how many addresses one session can try.
"""

import enum
import logging
from dataclasses import dataclass

from kubemta_common.metrics import preinitialise
from kubemta_common.transport_map import Nexthop
from kubemta_ingress import metrics, replies
from kubemta_ingress.lmtp_probe import ProbeStatus, UnsendableAddress
from kubemta_ingress.policy import canonical_domain, split_address
from kubemta_ingress.recipient_map import RecipientMap, normal_local_part
from kubemta_ingress.recipient_probes import RecipientProber
from kubemta_ingress.rejections import Reason

logger = logging.getLogger(__name__)

POSTMASTER = "postmaster"  # RFC 5321 section 4.5.1: MUST be accepted for every domain the server handles
MAX_REPLY = 510  # RFC 5321 section 4.5.3.1.5: a reply line is at most 512 octets with its CRLF
# Postfix' wording (smtpd_check.c), with RFC 3463 codes: X.1.1 bad destination mailbox address.
UNKNOWN_IN_MAP = "550 5.1.1 <{address}>: Recipient address rejected: User unknown in local recipient table"
UNDELIVERABLE = "550 {enhanced} <{address}>: Recipient address rejected: undeliverable address: {detail}"
UNVERIFIED = "450 4.1.1 <{address}>: Recipient address rejected: unverified address: {detail}"


class Source(enum.StrEnum):
    """Where a recipient was verified (label `source` of kubemta_recipient_verifications_total)."""

    MAP = "map"
    LMTP = "lmtp"


preinitialise(
    metrics.RECIPIENT_VERIFICATIONS,
    source=[source.value for source in Source],
    result=[status.value for status in ProbeStatus],
)


@dataclass(frozen=True, slots=True)
class Refusal:
    """A refused recipient: why (for kubemta_messages_rejected_total) and the reply."""

    reason: Reason
    reply: str


def _fit(template: str, address: str, detail: str, **fields: str) -> str:
    """`template` filled in, the detail shortened so the reply stays within one reply line when it can."""
    reply = template.format(address=address, detail=detail, **fields)
    excess = len(reply) - MAX_REPLY
    if excess > 0 and detail:
        detail = detail[: max(len(detail) - excess - 3, 0)] + "..."
        reply = template.format(address=address, detail=detail, **fields)
    return reply


class RecipientVerifier:
    """The RCPT check for local recipients: recipient maps first, then LMTP probes."""

    def __init__(
        self,
        *,
        maps: dict[str, RecipientMap],
        lmtp: dict[str, Nexthop],
        prober: RecipientProber | None,
    ) -> None:
        self._maps = dict(maps)
        self._lmtp = dict(lmtp) if prober is not None else {}
        self._prober = prober

    @property
    def verified_domains(self) -> frozenset[str]:
        """The domains whose recipients are checked."""
        return frozenset(self._maps) | frozenset(self._lmtp)

    async def verify(self, address: str) -> Refusal | None:
        """None when `address` (syntax already checked) may be accepted, else the refusal."""
        local, domain = split_address(address)
        canonical = canonical_domain(domain)
        if canonical is None or normal_local_part(local) == POSTMASTER:
            return None
        recipient_map = self._maps.get(canonical)
        if recipient_map is not None:
            if recipient_map.contains(local):
                metrics.RECIPIENT_VERIFICATIONS.labels(source=Source.MAP, result=ProbeStatus.KNOWN).inc()
                return None
            metrics.RECIPIENT_VERIFICATIONS.labels(source=Source.MAP, result=ProbeStatus.UNKNOWN).inc()
            return Refusal(Reason.UNKNOWN_RECIPIENT, _fit(UNKNOWN_IN_MAP, address, ""))
        nexthop = self._lmtp.get(canonical)
        if nexthop is None or self._prober is None:
            return None
        try:
            result = await self._prober.check(nexthop, f"{local}@{canonical}")
        except UnsendableAddress:
            return Refusal(Reason.BAD_ADDRESS, replies.BAD_RECIPIENT)
        metrics.RECIPIENT_VERIFICATIONS.labels(source=Source.LMTP, result=result.status).inc()
        if result.status is ProbeStatus.KNOWN:
            return None
        if result.status is ProbeStatus.UNKNOWN:
            enhanced = result.enhanced if result.enhanced.startswith("5.") else "5.1.1"
            return Refusal(Reason.UNKNOWN_RECIPIENT, _fit(UNDELIVERABLE, address, result.detail, enhanced=enhanced))
        return Refusal(Reason.UNVERIFIED_RECIPIENT, _fit(UNVERIFIED, address, result.detail))

    async def close(self) -> None:
        """Stop the probes still running."""
        if self._prober is not None:
            await self._prober.close()
