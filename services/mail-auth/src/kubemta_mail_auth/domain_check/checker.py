"""`check_domain`: every check of one sending domain, run concurrently, gathered in a report.

The checks (dkim_check, spf_check, dmarc_check, mx_check, hostname_check) share one
`MemoResolver`, so a name is asked once per report. A check never raises: DNS problems
are `unknown` checks, and an unexpected error inside one check is logged and reported as
that check's `unknown`, so the others still come back. Only an invalid domain name is an
error (InvalidDomainError), raised before anything is looked up.
"""

import asyncio
import logging
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass

from kubemta_mail_auth.dkim.public_keys import PublicKeyStore
from kubemta_mail_auth.domain_check.dkim_check import check_dkim
from kubemta_mail_auth.domain_check.dmarc_check import check_dmarc
from kubemta_mail_auth.domain_check.dns_queries import IPAddress, MemoResolver, Resolver
from kubemta_mail_auth.domain_check.hostname_check import check_hostname
from kubemta_mail_auth.domain_check.model import Check, DomainReport, Status
from kubemta_mail_auth.domain_check.mx_check import check_mx
from kubemta_mail_auth.domain_check.names import normalize_domain
from kubemta_mail_auth.domain_check.spf_check import check_spf

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CheckConfig:
    """What the domain's records are compared with: this MTA's name, its sending IPs and its DKIM public keys."""

    hostname: str
    sending_ips: Sequence[IPAddress] = ()
    dkim_keys: PublicKeyStore | None = None


async def check_domain(domain: str, config: CheckConfig, resolver: Resolver) -> DomainReport:
    """The report on `domain`'s DKIM, SPF, DMARC, MX, host name and PTR records; InvalidDomainError for a bad name."""
    name = normalize_domain(domain)
    memo = MemoResolver(resolver)
    groups = await asyncio.gather(
        _guarded("dkim", check_dkim(name, config.dkim_keys, memo)),
        _guarded("spf", _one(check_spf(name, config.sending_ips, config.hostname, memo))),
        _guarded("dmarc", _one(check_dmarc(name, memo))),
        _guarded("mx", _one(check_mx(name, memo))),
        _guarded("hostname", check_hostname(config.hostname, config.sending_ips, memo)),
    )
    return DomainReport.of(name, [check for group in groups for check in group])


async def _one(check: Awaitable[Check]) -> list[Check]:
    return [await check]


async def _guarded(name: str, checks: Awaitable[list[Check]]) -> list[Check]:
    try:
        return await checks
    except Exception as exc:  # a bug in one check must not hide the others' results
        logger.exception("domain check %s failed", name)
        return [Check(name=name, status=Status.UNKNOWN, detail=f"internal error in this check: {type(exc).__name__}")]
