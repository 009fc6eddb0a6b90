"""MTA-STS MX host patterns (RFC 8461 §4.1), used by the dns-resolver to filter a route's
hosts and by the delivery-worker to check the host it connects to."""

from collections.abc import Iterable


def _normalize(name: str) -> str:
    return name.strip().lower().rstrip(".")


def mx_matches(hostname: str, patterns: Iterable[str]) -> bool:
    """Exact match, or `*.` matching exactly one leftmost label; case-insensitive, trailing dot ignored."""
    name = _normalize(hostname)
    if not name:
        return False
    for raw in patterns:
        pattern = _normalize(raw)
        if pattern.startswith("*."):
            label, _, rest = name.partition(".")
            if label and rest == pattern[2:]:
                return True
        elif name == pattern:
            return True
    return False
