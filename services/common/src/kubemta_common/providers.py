"""The bounded `provider` metric label: which mailbox provider a destination's MX hosts belong to.

Operators judge bounce and deferral rates per provider; the label has a fixed set of
values so its cardinality stays bounded (see STYLE.md, metrics labels).
"""

PROVIDERS: tuple[str, ...] = ("google", "microsoft", "yahoo", "apple", "other")

_SUFFIXES: tuple[tuple[str, str], ...] = (
    ("google.com", "google"),
    ("googlemail.com", "google"),
    ("outlook.com", "microsoft"),
    ("hotmail.com", "microsoft"),
    ("microsoft.com", "microsoft"),
    ("yahoodns.net", "yahoo"),
    ("yahoo.com", "yahoo"),
    ("icloud.com", "apple"),
    ("apple.com", "apple"),
)


def provider_for_hosts(hostnames: list[str]) -> str:
    """The provider of the first MX host that matches a known provider, else `other`."""
    for hostname in hostnames:
        name = hostname.lower().rstrip(".")
        for suffix, provider in _SUFFIXES:
            if name == suffix or name.endswith("." + suffix):
                return provider
    return "other"


def provider_label(value: str) -> str:
    """A provider label value guaranteed to be in PROVIDERS."""
    return value if value in PROVIDERS else "other"
