"""The TLS policy of a route: `KUBEMTA_TLS_POLICY` and MTA-STS (RFC 8461), decided in the resolver.

Precedence, as in Postfix with an MTA-STS policy map (smtp_tls_policy_maps listing the
static table before the MTA-STS socketmap, smtp_tls_security_level as the default):

1. An explicit `KUBEMTA_TLS_POLICY` entry (exact domain or `.parent`) wins, also over
   MTA-STS: an operator can pin or relax a destination deliberately.
2. MX routes (source mx or implicit-mx): the domain's MTA-STS policy.
   - `enforce`: the route gets VERIFY and the policy's mx patterns; hosts whose name
     matches no pattern are removed (RFC 8461 §4.1). When none is left, the route fails
     *temporarily* with 4.7.5 (§5.1: a message that cannot be delivered under an
     enforced policy is not delivered, and is retried later rather than bounced,
     like Postfix deferring a `secure` destination).
   - `testing`: delivery stays opportunistic; hosts that would fail are logged (§5).
   - `none` (or no policy): nothing changes.
3. The `*` default level, else UNSPECIFIED (opportunistic).

Static routes (transport, relayhost) are looked up by their next hop's host name, since
that is whom the worker talks to (Postfix looks up the next hop too). A relayhost route
without an explicit entry needs at least `encrypt`: the worker may send credentials to
it (Postfix setups for SES/SendGrid use smtp_tls_security_level = encrypt).
LMTP routes are not changed.

Freshness (`fresh_for`, for the route answers the router shares): an MX route whose TLS policy comes from
MTA-STS is fresh only as long as the resolver would keep its cached TXT answer (and policy) without looking
again; every other policy is configuration, which does not go stale.
"""

import logging
import math
from dataclasses import dataclass

from kubemta.v1 import message_pb2
from kubemta_dns_resolver.mta_sts import MtaStsResolver, StsMode, StsPolicy
from kubemta_dns_resolver.tls_policy import SOURCE_DEFAULT, SOURCE_ENTRY, PolicyMatch, TlsLevel, TlsPolicyMap

logger = logging.getLogger(__name__)

# RFC 3463 §3.8: X.7.5 cryptographic failure (Postfix defers TLS policy failures with 4.7.5).
STATUS_TLS_POLICY = "4.7.5"
SOURCE_RELAYHOST = "relayhost (encrypt at least)"
SOURCE_MTA_STS_ENFORCE = "mta-sts enforce"
SOURCE_MTA_STS_TESTING = "mta-sts testing"
RELAYHOST_MINIMUM = TlsLevel.ENCRYPT
MX_SOURCES = ("mx", "implicit-mx")


@dataclass(frozen=True, slots=True)
class TlsRefusal:
    """The route must not be used: every host fails the TLS policy (reported as a temporary failure)."""

    status: str
    diagnostic: str


class RouteTlsPolicy:
    """Sets Route.tls_policy, tls_policy_source and mta_sts_mx (and drops non-matching MX hosts)."""

    def __init__(self, policy_map: TlsPolicyMap, mta_sts: MtaStsResolver | None) -> None:
        self._map = policy_map
        self._mta_sts = mta_sts

    async def apply(self, domain: str, route: message_pb2.Route) -> TlsRefusal | None:
        """Attach the TLS policy to `route` (a route for mail to `domain`); a refusal when no host may be used."""
        if route.kind not in (message_pb2.TRANSPORT_KIND_SMTP, message_pb2.TRANSPORT_KIND_UNSPECIFIED):
            return None
        if route.source not in MX_SOURCES:
            self._apply_static(route)
            return None
        match = self._map.explicit(domain)
        if match is not None:
            _set(route, match.level, f"{SOURCE_ENTRY} {match.key}")
            return None
        policy = await self._mta_sts.policy(domain) if self._mta_sts is not None else None
        if policy is not None and policy.mode is StsMode.ENFORCE:
            return _enforce(domain, route, policy)
        if policy is not None and policy.mode is StsMode.TESTING:
            _report_testing(domain, route, policy)
        default = self._map.default
        if default is not None:
            _set(route, default, SOURCE_DEFAULT)
        elif policy is not None and policy.mode is StsMode.TESTING:
            route.tls_policy_source = SOURCE_MTA_STS_TESTING
        return None

    def fresh_for(self, domain: str, route: message_pb2.Route) -> float:
        """Seconds the TLS policy `apply` gave `route` (to `domain`) stays what it would give again."""
        if self._mta_sts is None or route.source not in MX_SOURCES:
            return math.inf
        if route.kind not in (message_pb2.TRANSPORT_KIND_SMTP, message_pb2.TRANSPORT_KIND_UNSPECIFIED):
            return math.inf
        if self._map.explicit(domain) is not None:
            return math.inf
        return self._mta_sts.fresh_for(domain)

    def _apply_static(self, route: message_pb2.Route) -> None:
        match: PolicyMatch | None = None
        for name in dict.fromkeys(host.hostname for host in route.hosts if host.hostname):
            match = self._map.explicit(name)
            if match is not None:
                _set(route, match.level, f"{SOURCE_ENTRY} {match.key}")
                return
        default = self._map.default
        if route.source == "relayhost":
            if default is None or default.rank < RELAYHOST_MINIMUM.rank:
                _set(route, RELAYHOST_MINIMUM, SOURCE_RELAYHOST)
                return
        if default is not None:
            _set(route, default, SOURCE_DEFAULT)


def _set(route: message_pb2.Route, level: TlsLevel, source: str) -> None:
    route.tls_policy = level.proto
    route.tls_policy_source = source


def _enforce(domain: str, route: message_pb2.Route, policy: StsPolicy) -> TlsRefusal | None:
    kept = [host for host in route.hosts if policy.matches(host.hostname)]
    dropped = sorted({host.hostname for host in route.hosts if not policy.matches(host.hostname)})
    patterns = ", ".join(policy.mx)
    if not kept:
        return TlsRefusal(
            STATUS_TLS_POLICY,
            f"MTA-STS policy of {domain} (mode enforce, id {policy.policy_id}) allows none of its MX hosts "
            f"({', '.join(dropped) or 'none'}); allowed: {patterns}",
        )
    if dropped:
        logger.warning(
            "MTA-STS policy of %s (enforce) excludes MX host(s) %s (allowed: %s)",
            domain,
            ", ".join(dropped),
            patterns,
            extra={"domain": domain, "mta_sts_id": policy.policy_id},
        )
    del route.hosts[:]
    route.hosts.extend(kept)
    route.tls_policy = message_pb2.TLS_POLICY_VERIFY
    route.tls_policy_source = f"{SOURCE_MTA_STS_ENFORCE} (id {policy.policy_id})"
    del route.mta_sts_mx[:]
    route.mta_sts_mx.extend(policy.mx)
    return None


def _report_testing(domain: str, route: message_pb2.Route, policy: StsPolicy) -> None:
    mismatched = sorted({host.hostname for host in route.hosts if not policy.matches(host.hostname)})
    if mismatched:
        logger.warning(
            "MTA-STS policy of %s (testing) would exclude MX host(s) %s (allowed: %s); delivering opportunistically",
            domain,
            ", ".join(mismatched),
            ", ".join(policy.mx),
            extra={"domain": domain, "mta_sts_id": policy.policy_id},
        )
