"""The DNS stub resolver kubemta asks: dnspython's asyncio resolver, configured one way everywhere.

Used by the dns-resolver's routing look-ups and by the domain check. `nameservers` are the
parsed KUBEMTA_DNS_NAMESERVERS (address, port); none means the system's /etc/resolv.conf.
dnspython's own cache is off: the callers cache (routes) or must ask afresh (reports).
"""

import dns.asyncresolver
import dns.nameserver

PER_SERVER_TIMEOUT = 2.0
"""Seconds to wait for one name server before asking again (dnspython's default); the
look-up as a whole is bounded by the caller's timeout (KUBEMTA_DNS_TIMEOUT)."""


def stub_resolver(nameservers: list[tuple[str, int]], timeout: float) -> dns.asyncresolver.Resolver:
    """A resolver asking `nameservers` (or the system's), each look-up bounded by `timeout` seconds."""
    if nameservers:
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = [dns.nameserver.Do53Nameserver(address, port) for address, port in nameservers]
    else:
        resolver = dns.asyncresolver.Resolver()  # /etc/resolv.conf
    resolver.cache = None
    resolver.lifetime = timeout
    resolver.timeout = min(timeout, PER_SERVER_TIMEOUT)
    return resolver
