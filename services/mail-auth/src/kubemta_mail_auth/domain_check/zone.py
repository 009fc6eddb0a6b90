"""Zone-file lines for the records the domain check asks users to publish (RFC 1035 §5.1)."""

from kubemta_mail_auth.dkim.records import txt_strings
from kubemta_mail_auth.domain_check.dns_queries import IPAddress, address_type, reverse_name


def txt_line(name: str, value: str) -> str:
    """`name. IN TXT "value"`; a value over 255 octets is split into character-strings (RFC 1035 §3.3.14)."""
    strings = [f'"{_escape(part)}"' for part in txt_strings(value)]
    if len(strings) == 1:
        return f"{name}. IN TXT {strings[0]}"
    return f"{name}. IN TXT ( {' '.join(strings)} )"


def address_line(name: str, address: IPAddress) -> str:
    """`name. IN A 192.0.2.1` or `name. IN AAAA 2001:db8::1`."""
    return f"{name}. IN {address_type(address)} {address}"


def ptr_line(address: IPAddress, hostname: str) -> str:
    """`1.2.0.192.in-addr.arpa. IN PTR mta.example.com.`."""
    return f"{reverse_name(address)}. IN PTR {hostname}."


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')
