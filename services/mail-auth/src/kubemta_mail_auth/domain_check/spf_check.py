"""The `spf` check: one valid SPF record at the domain that authorizes every sending IP.

The record is looked up and parsed (exactly one `v=spf1` TXT record, RFC 7208 §4.5; every
term valid, §12), then check_host() (spf.py) is evaluated for each KUBEMTA_SENDING_IPS
address with the sender `postmaster@<domain>`, as a receiver would; each must `pass`.
Without sending IPs the record is still evaluated once, for a documentation address
(RFC 5737), to find permerrors such as too many DNS lookups; authorization is then
`unknown`.

The suggested record ends in `~all`, not `-all`: RFC 7489 §10.1 warns that receivers
which apply SPF before DMARC may reject on `-all` before DKIM (which kubemta signs) and
DMARC are looked at, losing forwarded mail that DMARC would have accepted. With DMARC
published, the domain's policy belongs in its DMARC record; `~all` marks other senders
as suspicious without preempting it.
"""

import ipaddress
from collections.abc import Sequence

from kubemta_mail_auth.domain_check.dns_queries import IPAddress, Resolver
from kubemta_mail_auth.domain_check.model import Check, Status
from kubemta_mail_auth.domain_check.spf import DNS_TERM_LIMIT, Evaluation, SpfEvaluator, SpfResult
from kubemta_mail_auth.domain_check.spf_syntax import VERSION, Qualifier, SpfSyntaxError, is_spf_record, parse_record
from kubemta_mail_auth.domain_check.zone import txt_line

CHECK_NAME = "spf"
DEFAULT_ALL = "~all"
"""The last term of a suggested record (see the module docstring)."""
PROBE_ADDRESS = ipaddress.IPv4Address("192.0.2.1")
"""RFC 5737 TEST-NET-1: evaluated when no sending IPs are configured; never a real sender."""
NOT_AUTHORIZED = (SpfResult.FAIL, SpfResult.SOFTFAIL, SpfResult.NEUTRAL, SpfResult.NONE)


def ip_term(address: IPAddress) -> str:
    """`ip4:192.0.2.1` or `ip6:2001:db8::1`."""
    return f"ip{address.version}:{address}"


def suggested_record(addresses: Sequence[IPAddress]) -> str:
    """A record authorizing exactly `addresses`: `v=spf1 ip4:... ip6:... ~all`."""
    return " ".join([VERSION, *(ip_term(address) for address in addresses), DEFAULT_ALL])


def with_addresses(record: str, addresses: Sequence[IPAddress]) -> str:
    """`record` with ip4/ip6 terms for `addresses` first, so they match before anything else."""
    rest = record.split(" ", 1)[1].strip() if " " in record else ""
    return " ".join(part for part in [VERSION, *(ip_term(address) for address in addresses), rest] if part)


async def check_spf(domain: str, sending_ips: Sequence[IPAddress], helo: str, resolver: Resolver) -> Check:
    """The `spf` check of `domain`."""
    answer = await resolver.query(domain, "TXT")
    if answer.outcome.temporary:
        return Check(name=CHECK_NAME, status=Status.UNKNOWN, detail=f"cannot look up the SPF record: {answer.detail}")
    records = [text for text in answer.records if is_spf_record(text)]
    if not records:
        return _missing(domain, sending_ips)
    if len(records) > 1:
        return Check(
            name=CHECK_NAME,
            status=Status.WRONG,
            found=records,
            detail=f"{domain} publishes {len(records)} SPF records; receivers treat that as permerror "
            "(RFC 7208 §4.5): merge them into one",
        )
    record = records[0]
    try:
        parsed = parse_record(record)
    except SpfSyntaxError as exc:
        return Check(
            name=CHECK_NAME,
            status=Status.WRONG,
            found=records,
            detail=f"the SPF record is invalid, so receivers get permerror (RFC 7208 §4.6): {exc}",
        )
    if any(m.name == "all" and m.qualifier is Qualifier.PASS for m in parsed.mechanisms):
        return Check(
            name=CHECK_NAME,
            status=Status.WRONG,
            found=records,
            expected=txt_line(domain, suggested_record(sending_ips)) if sending_ips else None,
            detail="the SPF record ends in '+all' (or 'all'), which authorizes every server on the internet",
        )
    evaluator = SpfEvaluator(resolver, helo)
    sender = f"postmaster@{domain}"
    if not sending_ips:
        probe = await evaluator.check_host(PROBE_ADDRESS, domain, sender)
        return _without_sending_ips(record, probe)
    evaluations = [(ip, await evaluator.check_host(ip, domain, sender)) for ip in sending_ips]
    return _verdict(domain, record, evaluations)


def _missing(domain: str, sending_ips: Sequence[IPAddress]) -> Check:
    detail = (
        f"no SPF record (TXT starting with {VERSION!r}) at {domain}: receivers cannot tell which servers send its mail"
    )
    if sending_ips:
        return Check(
            name=CHECK_NAME,
            status=Status.MISSING,
            expected=txt_line(domain, suggested_record(sending_ips)),
            detail=f"{detail}; publish the record below ({DEFAULT_ALL}: see RFC 7489 §10.1 on -all)",
        )
    return Check(
        name=CHECK_NAME,
        status=Status.MISSING,
        detail=f"{detail}; set KUBEMTA_SENDING_IPS to get the exact record to publish",
    )


def _without_sending_ips(record: str, probe: Evaluation) -> Check:
    if probe.result is SpfResult.PERMERROR:
        return Check(name=CHECK_NAME, status=Status.WRONG, found=[record], detail=f"permerror: {probe.reason}")
    if probe.result is SpfResult.TEMPERROR:
        return Check(name=CHECK_NAME, status=Status.UNKNOWN, found=[record], detail=f"temperror: {probe.reason}")
    return Check(
        name=CHECK_NAME,
        status=Status.UNKNOWN,
        found=[record],
        detail=f"the SPF record is valid ({probe.dns_terms} of {DNS_TERM_LIMIT} DNS-querying terms evaluated), "
        "but whether it authorizes this MTA cannot be checked: KUBEMTA_SENDING_IPS is not set",
    )


def _verdict(domain: str, record: str, evaluations: list[tuple[IPAddress, Evaluation]]) -> Check:
    problems: list[str] = []
    unknown: list[str] = []
    unauthorized: list[IPAddress] = []
    permerror = False
    for ip, evaluation in evaluations:
        if evaluation.result is SpfResult.PASS:
            continue
        if evaluation.result is SpfResult.TEMPERROR:
            unknown.append(f"{ip}: temperror ({evaluation.reason})")
        elif evaluation.result is SpfResult.PERMERROR:
            permerror = True
            problems.append(f"{ip}: permerror ({evaluation.reason})")
        else:
            unauthorized.append(ip)
            problems.append(f"{ip} is not authorized: {evaluation.result.value} ({evaluation.reason})")
    terms = max(evaluation.dns_terms for _, evaluation in evaluations)
    if problems:
        expected = None
        if unauthorized and not permerror:
            expected = txt_line(domain, with_addresses(record, unauthorized))
        return Check(
            name=CHECK_NAME, status=Status.WRONG, found=[record], expected=expected, detail="; ".join(problems)
        )
    if unknown:
        return Check(name=CHECK_NAME, status=Status.UNKNOWN, found=[record], detail="; ".join(unknown))
    passes = "; ".join(f"{ip} ({evaluation.reason})" for ip, evaluation in evaluations)
    return Check(
        name=CHECK_NAME,
        status=Status.OK,
        found=[record],
        detail=f"SPF passes for every sending IP: {passes}; {terms} of {DNS_TERM_LIMIT} DNS-querying terms used",
    )
