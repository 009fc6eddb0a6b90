"""The domain check as the ingress configures it: from `IngressSettings` to `CheckConfig` and a resolver.

Shared by the HTTP API (api.py) and `kubemta-ingress domains check` (domains_cli.py), so
both compare DNS with the same host name, sending IPs and DKIM keys, through the same
name servers (KUBEMTA_DNS_NAMESERVERS, else /etc/resolv.conf) and timeout.
"""

from kubemta_common.dkim.keys import KeyStore
from kubemta_common.domain_check import CheckConfig, DnspythonResolver
from kubemta_ingress.settings import IngressSettings


def check_config(settings: IngressSettings) -> CheckConfig:
    """This MTA's host name, sending IPs and DKIM keys (None without KUBEMTA_DKIM_KEYS_DIR)."""
    keys = KeyStore(settings.dkim_keys_dir) if settings.dkim_keys_dir is not None else None
    return CheckConfig(hostname=settings.hostname, sending_ips=tuple(settings.sending_ips), key_store=keys)


def check_resolver(settings: IngressSettings) -> DnspythonResolver:
    """The DNS resolver of the domain check."""
    return DnspythonResolver(settings.nameservers(), settings.dns_timeout)
