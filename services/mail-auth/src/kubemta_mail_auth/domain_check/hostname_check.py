"""The `hostname` and `ptr:<ip>` checks: this MTA's name and addresses agree in DNS.

`hostname`: KUBEMTA_HOSTNAME (the name in HELO, Received and DSNs) must have A/AAAA
records listing every sending IP. `ptr:<ip>`: each sending IP must have a PTR record
naming the host name, which in turn resolves back to the IP: forward-confirmed reverse
DNS, which many receivers require (RFC 8601 §3 "iprev"; M3AAWG's sender guidance). The
PTR record is published by whoever owns the address block: usually set in the hosting or
cloud provider's console, not in the domain's own zone.
"""

import asyncio
import ipaddress
from collections.abc import Iterable, Sequence

from kubemta_mail_auth.domain_check.dns_queries import Answer, IPAddress, Resolver, reverse_name
from kubemta_mail_auth.domain_check.model import Check, Status
from kubemta_mail_auth.domain_check.names import InvalidDomainError, normalize_domain
from kubemta_mail_auth.domain_check.zone import address_line, ptr_line

CHECK_NAME = "hostname"
PTR_PREFIX = "ptr"


async def check_hostname(hostname: str, sending_ips: Sequence[IPAddress], resolver: Resolver) -> list[Check]:
    """The `hostname` check, then one `ptr:<ip>` check per sending IP."""
    try:
        name = normalize_domain(hostname)
    except InvalidDomainError as exc:
        return [
            Check(
                name=CHECK_NAME,
                status=Status.WRONG,
                detail=f"KUBEMTA_HOSTNAME {hostname!r} is not a fully qualified host name: {exc}",
            )
        ]
    a, aaaa = await asyncio.gather(resolver.query(name, "A"), resolver.query(name, "AAAA"))
    addresses = parse_addresses([*a.records, *aaaa.records])
    checks = [_forward(name, sending_ips, a, aaaa)]
    forward_failed = a.outcome.temporary or aaaa.outcome.temporary
    ptrs = await asyncio.gather(*(_reverse(name, ip, addresses, forward_failed, resolver) for ip in sending_ips))
    return checks + list(ptrs)


def parse_addresses(texts: Iterable[str]) -> set[IPAddress]:
    """The addresses among `texts` (as DNS returned them), parsed so that spellings do not matter."""
    addresses: set[IPAddress] = set()
    for text in texts:
        try:
            addresses.add(ipaddress.ip_address(text))
        except ValueError:
            continue
    return addresses


def _forward(name: str, sending_ips: Sequence[IPAddress], a: Answer, aaaa: Answer) -> Check:
    found = [*a.records, *aaaa.records]
    published = parse_addresses(found)
    missing = [ip for ip in sending_ips if ip not in published]
    expected = "\n".join(address_line(name, ip) for ip in missing) or None
    if (a.outcome.temporary or aaaa.outcome.temporary) and (missing or not sending_ips):
        detail = f"cannot look up the addresses of {name}: {a.detail if a.outcome.temporary else aaaa.detail}"
        return Check(name=CHECK_NAME, status=Status.UNKNOWN, found=found, detail=detail)
    if not sending_ips:
        detail = (
            f"{name} has no A or AAAA record"
            if not found
            else f"{name} resolves to {', '.join(found)}; whether these are the sending IPs cannot be checked"
        )
        return Check(
            name=CHECK_NAME,
            status=Status.MISSING if not found else Status.UNKNOWN,
            found=found,
            detail=f"{detail}: KUBEMTA_SENDING_IPS is not set",
        )
    if not found:
        detail = f"{name} (KUBEMTA_HOSTNAME, used in HELO) has no A or AAAA record; publish the records below"
        return Check(name=CHECK_NAME, status=Status.MISSING, expected=expected, detail=detail)
    if missing:
        detail = (
            f"{name} resolves to {', '.join(found)}, not to the sending IP(s) {', '.join(map(str, missing))}; "
            "add the records below"
        )
        return Check(name=CHECK_NAME, status=Status.WRONG, found=found, expected=expected, detail=detail)
    return Check(
        name=CHECK_NAME,
        status=Status.OK,
        found=found,
        detail=f"{name} resolves to every sending IP ({', '.join(map(str, sending_ips))})",
    )


async def _reverse(
    name: str, ip: IPAddress, addresses: set[IPAddress], forward_failed: bool, resolver: Resolver
) -> Check:
    check_name = f"{PTR_PREFIX}:{ip}"
    owner = reverse_name(ip)
    expected = ptr_line(ip, name)
    answer = await resolver.query(owner, "PTR")
    if answer.outcome.temporary:
        return Check(
            name=check_name, status=Status.UNKNOWN, expected=expected, detail=f"cannot look up {owner}: {answer.detail}"
        )
    found = list(answer.records)
    if not found:
        return Check(
            name=check_name,
            status=Status.MISSING,
            expected=expected,
            detail=f"{ip} has no PTR record (reverse DNS); many receivers refuse such mail. Have the owner of the "
            f"address (hosting or cloud provider) set it to {name}",
        )
    if name not in found:
        return Check(
            name=check_name,
            status=Status.WRONG,
            found=found,
            expected=expected,
            detail=f"the PTR record of {ip} names {', '.join(found)}, not {name} (KUBEMTA_HOSTNAME); "
            "have the owner of the address change it",
        )
    if ip not in addresses and forward_failed:
        detail = f"the PTR record of {ip} names {name}, whose addresses cannot be looked up now"
        return Check(name=check_name, status=Status.UNKNOWN, found=found, expected=expected, detail=detail)
    if ip not in addresses:
        return Check(
            name=check_name,
            status=Status.WRONG,
            found=found,
            expected=address_line(name, ip),
            detail=f"the PTR record of {ip} names {name}, but {name} does not resolve back to {ip}: "
            "reverse DNS is not forward-confirmed",
        )
    detail = f"{ip} -> {name} -> {ip}: forward-confirmed reverse DNS"
    if len(found) > 1:
        detail += f"; it has {len(found)} PTR records, and some receivers only look at one: keep only {name}"
    return Check(name=check_name, status=Status.OK, found=found, expected=expected, detail=detail)
