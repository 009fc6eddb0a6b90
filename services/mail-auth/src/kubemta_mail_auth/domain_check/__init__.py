"""The domain check: are the DNS records a sending domain needs published, and right?

`check_domain(domain, config, resolver)` looks up, over DNS, the DKIM key records of the
configured selectors, the SPF record (evaluated for each sending IP), the DMARC policy,
the MX records that receive bounces, and the forward and reverse DNS of this MTA's host
name, and reports each as ok / missing / wrong / unknown with the exact record to
publish. The ingress serves it over HTTP and the command line; a controller can call it.
"""

from kubemta_mail_auth.domain_check.checker import CheckConfig, check_domain
from kubemta_mail_auth.domain_check.dns_queries import DnspythonResolver, Resolver
from kubemta_mail_auth.domain_check.model import Check, DomainReport, Status
from kubemta_mail_auth.domain_check.names import InvalidDomainError, normalize_domain

__all__ = [
    "Check",
    "CheckConfig",
    "DnspythonResolver",
    "DomainReport",
    "InvalidDomainError",
    "Resolver",
    "Status",
    "check_domain",
    "normalize_domain",
]
