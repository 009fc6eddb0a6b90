"""The recipient verifier (recipient_verify.py) as the ingress settings describe it, and its start-up report.

Per local domain: its recipient map when `KUBEMTA_RECIPIENT_MAPS` names one (a file
that cannot be read stops the service with a ConfigError naming it), else its LMTP next
hop when `KUBEMTA_TRANSPORTS` routes it over LMTP and `KUBEMTA_RECIPIENT_VERIFY` is on.
The domains left with neither are named in a warning: every local part of them is
accepted, and an unknown one becomes a bounce to a possibly forged sender (backscatter).
"""

import logging

from kubemta_common.dns_client import stub_resolver
from kubemta_common.errors import ConfigError
from kubemta_common.transport_map import Nexthop
from kubemta_ingress.lmtp_connect import LmtpConnector
from kubemta_ingress.recipient_map import RecipientMap
from kubemta_ingress.recipient_probes import ProbeLimits, RecipientProber
from kubemta_ingress.recipient_verify import RecipientVerifier
from kubemta_ingress.settings import IngressSettings

logger = logging.getLogger(__name__)


def load_maps(settings: IngressSettings, local_domains: frozenset[str]) -> dict[str, RecipientMap]:
    """The recipient maps of local domains; ConfigError when a file cannot be read."""
    maps: dict[str, RecipientMap] = {}
    for domain, path in settings.recipient_maps.items():
        if domain not in local_domains:
            logger.warning(
                "KUBEMTA_RECIPIENT_MAPS names %s, which is not in KUBEMTA_LOCAL_DOMAINS: its map is not used",
                domain,
            )
            continue
        try:
            maps[domain] = RecipientMap(
                domain,
                path,
                delimiter=settings.recipient_delimiter,
                check_interval=settings.recipient_map_check_interval,
            )
        except (OSError, ValueError) as exc:
            raise ConfigError(f"KUBEMTA_RECIPIENT_MAPS: the map of {domain} ({path}) cannot be read: {exc}") from None
    return maps


def lmtp_next_hops(settings: IngressSettings, local_domains: frozenset[str]) -> dict[str, Nexthop]:
    """The LMTP next hop of each local domain that KUBEMTA_TRANSPORTS routes over LMTP."""
    transports = settings.transports
    hops: dict[str, Nexthop] = {}
    for domain in sorted(local_domains):
        transport = transports.lookup(domain)
        if transport is not None and transport.is_lmtp:
            hops[domain] = transport.nexthop
    return hops


def build_verifier(settings: IngressSettings) -> RecipientVerifier:
    """The verifier for `settings`; logs which local domains it checks, and warns about the others."""
    local_domains = frozenset(settings.local_domains)
    maps = load_maps(settings, local_domains)
    lmtp = {domain: hop for domain, hop in lmtp_next_hops(settings, local_domains).items() if domain not in maps}
    prober = None
    if settings.recipient_verify and lmtp:
        resolver = stub_resolver(settings.dns_nameservers, min(settings.dns_timeout, settings.recipient_verify_timeout))
        limits = ProbeLimits(
            timeout=settings.recipient_verify_timeout,
            concurrency=settings.recipient_verify_concurrency,
            positive_ttl=settings.recipient_verify_positive_ttl,
            negative_ttl=settings.recipient_verify_negative_ttl,
            cache_size=settings.recipient_verify_cache_size,
        )
        prober = RecipientProber(LmtpConnector(resolver), helo=settings.hostname, limits=limits)
    verifier = RecipientVerifier(maps=maps, lmtp=lmtp, prober=prober)
    if verifier.verified_domains:
        logger.info(
            "recipients verified at RCPT",
            extra={
                "maps": sorted(maps),
                "lmtp": sorted(lmtp) if prober is not None else [],
            },
        )
    unverified = sorted(local_domains - verifier.verified_domains)
    if unverified:
        logger.warning(
            "recipients of local domains %s are not verified (no recipient map, no LMTP route with "
            "KUBEMTA_RECIPIENT_VERIFY on): every local part is accepted, and mail to an unknown user becomes a "
            "bounce to a possibly forged sender (backscatter)",
            ", ".join(unverified),
            extra={"domains": unverified},
        )
    return verifier
