"""SPF evaluation: check_host() of RFC 7208 §4, asynchronous, over the domain check's `Resolver`.

Written here rather than taken from pyspf: pyspf is synchronous, queries through
dnspython's deprecated module-level API (`dns.resolver.query`) and cannot be pointed at
our resolver (KUBEMTA_DNS_NAMESERVERS, the timeout, the test name server); this module
is small, async, and uses the same dnspython asyncio resolver as the rest of the check.

It follows include (§5.2), redirect (§6.1), a (§5.3), mx (§5.4), ptr (§5.5), ip4/ip6
(§5.6), exists (§5.7) and all (§5.1), expands macros (§7, spf_macros.py), and enforces
the limits of §4.6.4 over the whole evaluation, nested records included: at most 10
DNS-querying terms (include, a, mx, ptr, exists, redirect; checked before the 11th is
evaluated), at most 2 void lookups (NXDOMAIN or no records), at most 10 MX names per
`mx` and 10 PTR names per `ptr` / `%{p}`. Exceeding a limit is permerror. The `exp=`
explanation is not fetched: nobody reads it here.
"""

import ipaddress
from dataclasses import dataclass, field
from enum import StrEnum

from kubemta_mail_auth.domain_check.dns_queries import IPAddress, MxHost, Resolver, address_type, reverse_name
from kubemta_mail_auth.domain_check.spf_macros import MacroContext, MacroError, expand_domain, uses_letter
from kubemta_mail_auth.domain_check.spf_syntax import (
    DNS_MECHANISMS,
    Mechanism,
    Qualifier,
    SpfRecord,
    SpfSyntaxError,
    is_spf_record,
    parse_record,
)

DNS_TERM_LIMIT = 10
"""RFC 7208 §4.6.4: include, a, mx, ptr, exists and redirect, counted over the whole evaluation."""
VOID_LOOKUP_LIMIT = 2
"""RFC 7208 §4.6.4: DNS-querying terms answered with NXDOMAIN or no records."""
MX_NAMES_LIMIT = 10
"""RFC 7208 §4.6.4: an `mx` whose domain has more MX records is permerror."""
PTR_NAMES_LIMIT = 10
"""RFC 7208 §4.6.4: a `ptr` or `%{p}` looks at the first 10 PTR names only."""
MAX_LABEL_LENGTH = 63
MAX_NAME_LENGTH = 253


class SpfResult(StrEnum):
    """RFC 7208 §2.6."""

    NONE = "none"
    NEUTRAL = "neutral"
    PASS = "pass"
    FAIL = "fail"
    SOFTFAIL = "softfail"
    TEMPERROR = "temperror"
    PERMERROR = "permerror"


QUALIFIER_RESULTS = {
    Qualifier.PASS: SpfResult.PASS,
    Qualifier.FAIL: SpfResult.FAIL,
    Qualifier.SOFTFAIL: SpfResult.SOFTFAIL,
    Qualifier.NEUTRAL: SpfResult.NEUTRAL,
}


@dataclass(frozen=True, slots=True)
class Evaluation:
    """The outcome of one check_host(): the result, why, and what the evaluation cost."""

    result: SpfResult
    reason: str
    dns_terms: int
    void_lookups: int


class _Abort(Exception):
    """Ends the whole evaluation with temperror or permerror (they propagate through include and redirect)."""

    def __init__(self, result: SpfResult, reason: str) -> None:
        super().__init__(reason)
        self.result = result
        self.reason = reason


@dataclass
class _State:
    ip: IPAddress
    sender: str
    helo: str
    dns_terms: int = 0
    void_lookups: int = 0
    validated_names: list[str] | None = field(default=None)
    ptr_void: bool = False

    def count_term(self, term: str, domain: str) -> None:
        if self.dns_terms >= DNS_TERM_LIMIT:
            raise _Abort(
                SpfResult.PERMERROR,
                f"more than {DNS_TERM_LIMIT} DNS-querying terms (include, a, mx, ptr, exists, redirect) "
                f"in the whole evaluation; the 11th was {term!r} in the record of {domain} (RFC 7208 §4.6.4)",
            )
        self.dns_terms += 1

    def count_void(self, term: str, domain: str) -> None:
        self.void_lookups += 1
        if self.void_lookups > VOID_LOOKUP_LIMIT:
            raise _Abort(
                SpfResult.PERMERROR,
                f"more than {VOID_LOOKUP_LIMIT} DNS lookups found nothing (void lookups); the last was "
                f"{term!r} in the record of {domain} (RFC 7208 §4.6.4)",
            )


def valid_target(name: str) -> bool:
    """RFC 7208 §4.3: a multi-label name with no empty or over-long label, 253 characters at most."""
    name = name[:-1] if name.endswith(".") else name
    labels = name.split(".")
    return (
        len(labels) >= 2
        and len(name) <= MAX_NAME_LENGTH
        and all(0 < len(label) <= MAX_LABEL_LENGTH for label in labels)
    )


class SpfEvaluator:
    """check_host() over `resolver`; `helo` is the name this MTA greets with (%{h})."""

    def __init__(self, resolver: Resolver, helo: str) -> None:
        self._resolver = resolver
        self._helo = helo

    async def check_host(self, ip: IPAddress, domain: str, sender: str) -> Evaluation:
        """The SPF result for mail from `sender` sent by `ip`, starting at `domain`'s record."""
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped  # RFC 7208 §5: an IPv4-mapped address is treated as IPv4
        local, at, sender_domain = sender.rpartition("@")
        sender = f"{local or 'postmaster'}@{sender_domain}" if at else f"postmaster@{sender}"
        state = _State(ip, sender, self._helo)
        try:
            result, reason = await self._check_host(domain, state)
        except _Abort as abort:
            result, reason = abort.result, abort.reason
        return Evaluation(result, reason, state.dns_terms, state.void_lookups)

    async def _check_host(self, domain: str, state: _State) -> tuple[SpfResult, str]:
        if not valid_target(domain):
            return SpfResult.NONE, f"{domain!r} is not a valid domain name (RFC 7208 §4.3)"
        record = await self._record(domain)
        if record is None:
            return SpfResult.NONE, f"{domain} publishes no SPF record"
        context = MacroContext(state.sender, domain, state.ip, state.helo)
        for mechanism in record.mechanisms:
            if mechanism.name in DNS_MECHANISMS:
                state.count_term(mechanism.text, domain)
            if await self._matches(mechanism, domain, context, state):
                result = QUALIFIER_RESULTS[mechanism.qualifier]
                return result, f"matched {mechanism.text!r} in the record of {domain}"
        if record.redirect is not None:
            term = f"redirect={record.redirect}"
            state.count_term(term, domain)
            target = await self._expand(record.redirect, term, context, state)
            result, reason = await self._check_host(target, state)
            if result is SpfResult.NONE:  # RFC 7208 §6.1
                raise _Abort(SpfResult.PERMERROR, f"{term!r} in the record of {domain}: {reason}")
            return result, reason
        return SpfResult.NEUTRAL, f"no mechanism matched in the record of {domain} (the default is ?all)"

    async def _record(self, domain: str) -> SpfRecord | None:
        """RFC 7208 §4.4-4.6: the one SPF record of `domain`, None when it has none."""
        answer = await self._resolver.query(domain, "TXT")
        if answer.outcome.temporary:
            raise _Abort(SpfResult.TEMPERROR, f"DNS error looking up the SPF record of {domain}: {answer.detail}")
        records = [text for text in answer.records if is_spf_record(text)]
        if not records:
            return None
        if len(records) > 1:
            raise _Abort(SpfResult.PERMERROR, f"{domain} publishes {len(records)} SPF records (RFC 7208 §4.5)")
        try:
            return parse_record(records[0])
        except SpfSyntaxError as exc:
            raise _Abort(SpfResult.PERMERROR, f"the SPF record of {domain} is invalid: {exc}") from None

    async def _matches(self, mechanism: Mechanism, domain: str, context: MacroContext, state: _State) -> bool:
        name = mechanism.name
        if name == "all":
            return True
        if name in ("ip4", "ip6"):
            assert mechanism.network is not None
            return state.ip.version == mechanism.network.version and state.ip in mechanism.network
        target = domain
        if mechanism.domain_spec is not None:
            target = await self._expand(mechanism.domain_spec, mechanism.text, context, state)
        if name == "include":
            return await self._include(mechanism, target, state)
        if name == "a":
            return await self._a(mechanism, target, domain, state)
        if name == "mx":
            return await self._mx(mechanism, target, domain, state)
        if name == "ptr":
            return await self._ptr(mechanism, target, domain, state)
        return await self._exists(mechanism, target, domain, state)

    async def _include(self, mechanism: Mechanism, target: str, state: _State) -> bool:
        """RFC 7208 §5.2: match on pass; temperror and permerror propagate; none is permerror."""
        result, reason = await self._check_host(target, state)
        if result is SpfResult.NONE:
            raise _Abort(SpfResult.PERMERROR, f"{mechanism.text!r}: {reason}")
        return result is SpfResult.PASS

    async def _a(self, mechanism: Mechanism, target: str, domain: str, state: _State) -> bool:
        addresses = await self._addresses(target, mechanism, domain, state)
        return self._in_any(addresses, mechanism, state.ip)

    async def _mx(self, mechanism: Mechanism, target: str, domain: str, state: _State) -> bool:
        answer = await self._resolver.query(target, "MX")
        if answer.outcome.temporary:
            raise _Abort(SpfResult.TEMPERROR, f"{mechanism.text!r} in the record of {domain}: {answer.detail}")
        if answer.outcome.void:
            state.count_void(mechanism.text, domain)
            return False
        hosts = [MxHost.parse(record) for record in answer.records]
        if len(hosts) > MX_NAMES_LIMIT:
            raise _Abort(
                SpfResult.PERMERROR,
                f"{mechanism.text!r} in the record of {domain}: {target} has {len(hosts)} MX records, "
                f"more than {MX_NAMES_LIMIT} (RFC 7208 §4.6.4)",
            )
        for host in sorted(hosts, key=lambda h: h.preference):
            if host.null:
                continue
            answer = await self._resolver.query(host.exchange, address_type(state.ip))
            if answer.outcome.temporary:
                raise _Abort(SpfResult.TEMPERROR, f"{mechanism.text!r} in the record of {domain}: {answer.detail}")
            if self._in_any(answer.records, mechanism, state.ip):
                return True
        return False

    async def _ptr(self, mechanism: Mechanism, target: str, domain: str, state: _State) -> bool:
        """RFC 7208 §5.5: a validated reverse name equal to or under `target`; DNS errors do not match."""
        names = await self._validated_names(state)
        if state.ptr_void:
            state.count_void(mechanism.text, domain)
        target = target.lower()
        return any(name == target or name.endswith("." + target) for name in names)

    async def _exists(self, mechanism: Mechanism, target: str, domain: str, state: _State) -> bool:
        """RFC 7208 §5.7: any A record matches (A even for IPv6 clients)."""
        answer = await self._resolver.query(target, "A")
        if answer.outcome.temporary:
            raise _Abort(SpfResult.TEMPERROR, f"{mechanism.text!r} in the record of {domain}: {answer.detail}")
        if answer.outcome.void:
            state.count_void(mechanism.text, domain)
            return False
        return bool(answer.records)

    async def _addresses(self, name: str, mechanism: Mechanism, domain: str, state: _State) -> tuple[str, ...]:
        answer = await self._resolver.query(name, address_type(state.ip))
        if answer.outcome.temporary:
            raise _Abort(SpfResult.TEMPERROR, f"{mechanism.text!r} in the record of {domain}: {answer.detail}")
        if answer.outcome.void:
            state.count_void(mechanism.text, domain)
        return answer.records

    @staticmethod
    def _in_any(addresses: tuple[str, ...], mechanism: Mechanism, ip: IPAddress) -> bool:
        length = mechanism.cidr4 if ip.version == 4 else mechanism.cidr6
        for text in addresses:
            try:
                network = ipaddress.ip_network(f"{text}/{length}", strict=False)
            except ValueError:
                continue
            if network.version == ip.version and ip in network:
                return True
        return False

    async def _validated_names(self, state: _State) -> list[str]:
        """RFC 7208 §5.5: the PTR names of the client (first 10) whose A/AAAA records include it."""
        if state.validated_names is not None:
            return state.validated_names
        answer = await self._resolver.query(reverse_name(state.ip), "PTR")
        validated: list[str] = []
        state.ptr_void = answer.outcome.void
        for name in answer.records[:PTR_NAMES_LIMIT]:
            addresses = await self._resolver.query(name, address_type(state.ip))
            if any(_same_address(text, state.ip) for text in addresses.records):
                validated.append(name.lower())
        state.validated_names = validated
        return validated

    async def _expand(self, spec: str, term: str, context: MacroContext, state: _State) -> str:
        if uses_letter(spec, "p"):
            names = await self._validated_names(state)
            under = [n for n in names if n == context.domain or n.endswith("." + context.domain)]
            context = MacroContext(
                context.sender, context.domain, context.ip, context.helo, (under or names or ["unknown"])[0]
            )
        try:
            return expand_domain(spec, context)
        except MacroError as exc:  # parse_record checked the macros already; kept for safety
            raise _Abort(SpfResult.PERMERROR, f"{term!r}: {exc}") from None


def _same_address(text: str, ip: IPAddress) -> bool:
    try:
        return ipaddress.ip_address(text) == ip
    except ValueError:
        return False
