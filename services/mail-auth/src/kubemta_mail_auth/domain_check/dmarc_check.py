"""The `dmarc` check: the DMARC policy (RFC 7489) that applies to the domain.

Policy discovery (§6.6.3): `_dmarc.<domain>` TXT; records not starting with `v=DMARC1`
are discarded; several DMARC records mean none applies (wrong). When the domain has
none, its parents are tried, as a receiver falls back to the Organizational Domain.
No public suffix list is available, so the walk goes up while the name has more than
two labels (`a.b.example.com` -> `b.example.com` -> `example.com`); a record found there
applies through its `sp=` (else `p=`) and the check is ok, "inherited".

The suggested record is `v=DMARC1; p=none; rua=mailto:postmaster@<domain>`: `p=none`
asks receivers for no action (RFC 7489 §6.3) but for aggregate reports, so no legitimate
mail is lost while the reports show which servers send for the domain. The reports go
to `postmaster`, which every mail domain must have (RFC 5321 §4.5.1), at the domain
itself, so no external-destination authorization is needed (RFC 7489 §7.1).
Tighten to `p=quarantine` or `p=reject` once the reports are clean.
"""

from kubemta_mail_auth.domain_check.dmarc_record import (
    DmarcPolicy,
    DmarcSyntaxError,
    is_dmarc_record,
    looks_like_dmarc,
    parse_dmarc,
)
from kubemta_mail_auth.domain_check.dns_queries import Resolver
from kubemta_mail_auth.domain_check.model import Check, Status
from kubemta_mail_auth.domain_check.zone import txt_line

CHECK_NAME = "dmarc"
ORGANIZATIONAL_LABELS = 2
"""Without a public suffix list, the walk stops at names of two labels (example.com)."""


def dmarc_name(domain: str) -> str:
    """`_dmarc.<domain>` (RFC 7489 §6.1)."""
    return f"_dmarc.{domain}"


def suggested_record(domain: str) -> str:
    """`v=DMARC1; p=none; rua=mailto:postmaster@<domain>` (see the module docstring)."""
    return f"v=DMARC1; p=none; rua=mailto:postmaster@{domain}"


def parents(domain: str) -> list[str]:
    """The parents the walk tries: `a.b.example.com` -> [`b.example.com`, `example.com`]."""
    labels = domain.split(".")
    return [".".join(labels[start:]) for start in range(1, len(labels) - ORGANIZATIONAL_LABELS + 1)]


async def check_dmarc(domain: str, resolver: Resolver) -> Check:
    """The `dmarc` check of `domain`."""
    expected = txt_line(dmarc_name(domain), suggested_record(domain))
    for owner in [domain, *parents(domain)]:
        name = dmarc_name(owner)
        answer = await resolver.query(name, "TXT")
        if answer.outcome.temporary:
            return Check(name=CHECK_NAME, status=Status.UNKNOWN, detail=f"cannot look up {name}: {answer.detail}")
        records = [text for text in answer.records if is_dmarc_record(text)]
        if not records:
            discarded = [text for text in answer.records if looks_like_dmarc(text)]
            if discarded:
                return Check(
                    name=CHECK_NAME,
                    status=Status.WRONG,
                    found=discarded,
                    expected=expected if owner == domain else None,
                    detail=f"the TXT record at {name} does not start with 'v=DMARC1' (upper case, first tag), "
                    "so receivers discard it (RFC 7489 §6.6.3)",
                )
            continue
        return _judge(domain, owner, records, expected)
    return Check(
        name=CHECK_NAME,
        status=Status.MISSING,
        expected=expected,
        detail=f"no DMARC record at {dmarc_name(domain)}"
        + (f" or its parents ({', '.join(dmarc_name(p) for p in parents(domain))})" if parents(domain) else "")
        + ": receivers apply no policy and send no reports; publish the record below (p=none monitors first)",
    )


def _judge(domain: str, owner: str, records: list[str], expected: str) -> Check:
    name = dmarc_name(owner)
    own = owner == domain
    if len(records) > 1:
        return Check(
            name=CHECK_NAME,
            status=Status.WRONG,
            found=records,
            expected=expected if own else None,
            detail=f"{name} has {len(records)} DMARC records, so receivers apply none (RFC 7489 §6.6.3): keep one",
        )
    try:
        policy = parse_dmarc(records[0])
    except DmarcSyntaxError as exc:
        return Check(
            name=CHECK_NAME,
            status=Status.WRONG,
            found=records,
            expected=expected if own else None,
            detail=f"the DMARC record at {name} is invalid: {exc}",
        )
    return Check(name=CHECK_NAME, status=Status.OK, found=records, detail=_describe(domain, owner, policy))


def _describe(domain: str, owner: str, policy: DmarcPolicy) -> str:
    if owner == domain:
        text = f"DMARC policy {policy.summary()}"
        applied = policy.p
    else:
        applied = policy.subdomain_policy()
        text = (
            f"no record at {dmarc_name(domain)}; inherited from {dmarc_name(owner)}: "
            f"{applied} applies to {domain} (sp=, else p=), policy {policy.summary()}"
        )
    if policy.rua:
        text += f"; aggregate reports to {', '.join(policy.rua)}"
    if applied == "none":
        text += "; p=none only monitors: move to quarantine or reject once the reports show only your servers"
    if policy.pct < 100:
        text += f"; the policy applies to {policy.pct}% of failing mail"
    return text
