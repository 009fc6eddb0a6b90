"""The domain check as the ingress configures it: from `IngressSettings` to `CheckConfig` and a resolver.

Shared by the HTTP API (api.py) and `kubemta-admin domains check` (domains_cli.py), so
both compare DNS with the same host name, sending IPs and DKIM public keys, through the
same name servers (KUBEMTA_DNS_NAMESERVERS, else /etc/resolv.conf) and timeout. The keys
directory needs only the public `<domain>/<selector>.pub` files (PublicKeyStore); the
ingress faces the internet, so it is not given the private keys that sign.
"""

from kubemta_ingress.settings import IngressSettings
from kubemta_mail_auth.dkim.public_keys import PublicKeyStore
from kubemta_mail_auth.domain_check import CheckConfig, DnspythonResolver


def check_config(settings: IngressSettings) -> CheckConfig:
    """This MTA's host name, sending IPs and DKIM public keys (None without KUBEMTA_DKIM_KEYS_DIR)."""
    keys = PublicKeyStore(settings.dkim_keys_dir) if settings.dkim_keys_dir is not None else None
    return CheckConfig(hostname=settings.hostname, sending_ips=tuple(settings.sending_ips), dkim_keys=keys)


def check_resolver(settings: IngressSettings) -> DnspythonResolver:
    """The DNS resolver of the domain check."""
    return DnspythonResolver(settings.dns_nameservers, settings.dns_timeout)
