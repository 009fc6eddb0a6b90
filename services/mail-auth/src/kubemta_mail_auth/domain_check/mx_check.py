"""The `mx` check: can mail to the domain, bounces and replies above all, be delivered?

MX records naming hosts that have addresses: ok. A null MX (`0 .`, RFC 7505): wrong, the
domain declares it accepts no mail, so bounces to its senders are lost; a null MX next to
other MX records is forbidden (RFC 7505 §3). No MX: missing; senders then use the
domain's own A/AAAA address (implicit MX, RFC 5321 §5.1), which works only if that host
accepts SMTP. MX hosts none of which resolves: wrong.
"""

import asyncio

from kubemta_mail_auth.domain_check.dns_queries import Answer, MxHost, Outcome, Resolver
from kubemta_mail_auth.domain_check.model import Check, Status

CHECK_NAME = "mx"
MAX_HOSTS_RESOLVED = 10
"""MX hosts whose addresses are looked up (a bound, like RFC 7208 §4.6.4's)."""


async def check_mx(domain: str, resolver: Resolver) -> Check:
    """The `mx` check of `domain`."""
    answer = await resolver.query(domain, "MX")
    if answer.outcome.temporary:
        return Check(name=CHECK_NAME, status=Status.UNKNOWN, detail=f"cannot look up the MX records: {answer.detail}")
    if answer.outcome is Outcome.NXDOMAIN:
        return Check(
            name=CHECK_NAME,
            status=Status.MISSING,
            detail=f"{domain} does not exist in DNS (NXDOMAIN): bounces and replies to it cannot be delivered",
        )
    try:
        hosts = sorted((MxHost.parse(record) for record in answer.records), key=lambda h: (h.preference, h.exchange))
    except ValueError:
        return Check(name=CHECK_NAME, status=Status.WRONG, found=list(answer.records), detail="unreadable MX records")
    if not hosts:
        return await _implicit_mx(domain, resolver)
    found = [f"{host.preference} {host.exchange}" for host in hosts]
    if any(host.null for host in hosts):
        if len(hosts) > 1:
            detail = "a null MX ('0 .') next to other MX records, which RFC 7505 §3 forbids; remove the null MX"
        else:
            detail = (
                f"null MX (RFC 7505): {domain} declares that it accepts no mail, so bounces and replies to its "
                "senders cannot be delivered; publish MX records naming the servers that receive its mail"
            )
        return Check(name=CHECK_NAME, status=Status.WRONG, found=found, detail=detail)
    resolved = hosts[:MAX_HOSTS_RESOLVED]
    answers = await asyncio.gather(*(_addresses(host.exchange, resolver) for host in resolved))
    looked_up = list(zip(resolved, answers, strict=True))
    with_address = [host.exchange for host, answers in looked_up if _has_address(answers)]
    temporary = [host.exchange for host, answers in looked_up if not _has_address(answers) and _temporary(answers)]
    unresolvable = [
        host.exchange for host, answers in looked_up if not _has_address(answers) and not _temporary(answers)
    ]
    listing = ", ".join(found)
    if not with_address and temporary:
        detail = f"MX {listing}; cannot look up the addresses of {', '.join(temporary)}"
        return Check(name=CHECK_NAME, status=Status.UNKNOWN, found=found, detail=detail)
    if not with_address:
        detail = f"MX {listing}, but no MX host has an A or AAAA record: mail to {domain} cannot be delivered"
        return Check(name=CHECK_NAME, status=Status.WRONG, found=found, detail=detail)
    detail = f"mail to {domain} (bounces, replies) goes to MX {listing}"
    if unresolvable:
        detail += f"; {', '.join(unresolvable)} has no A or AAAA record"
    if temporary:
        detail += f"; the addresses of {', '.join(temporary)} cannot be looked up now"
    return Check(name=CHECK_NAME, status=Status.OK, found=found, detail=detail)


async def _addresses(name: str, resolver: Resolver) -> tuple[Answer, Answer]:
    a, aaaa = await asyncio.gather(resolver.query(name, "A"), resolver.query(name, "AAAA"))
    return a, aaaa


def _has_address(answers: tuple[Answer, Answer]) -> bool:
    return any(answer.records for answer in answers)


def _temporary(answers: tuple[Answer, Answer]) -> bool:
    return any(answer.outcome.temporary for answer in answers)


async def _implicit_mx(domain: str, resolver: Resolver) -> Check:
    a, aaaa = await _addresses(domain, resolver)
    addresses = [*a.records, *aaaa.records]
    if addresses:
        detail = (
            f"no MX records: mail to {domain} (bounces, replies) goes to its own address {', '.join(addresses)} "
            "(implicit MX, RFC 5321 §5.1), which works only if that host accepts SMTP on port 25; "
            "publish MX records naming the servers that receive its mail"
        )
    elif a.outcome.temporary or aaaa.outcome.temporary:
        return Check(
            name=CHECK_NAME, status=Status.UNKNOWN, detail=f"no MX records, and cannot look up {domain}'s addresses"
        )
    else:
        detail = (
            f"no MX records and no A/AAAA record: mail to {domain} (bounces, replies) cannot be delivered; "
            "publish MX records naming the servers that receive its mail"
        )
    return Check(name=CHECK_NAME, status=Status.MISSING, detail=detail)
