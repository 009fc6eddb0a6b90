"""The server's SIZE limit (RFC 1870) checked before MAIL FROM.

RFC 1870 §6: a server that announces `SIZE <n>` (n > 0) will not take a larger
message, so a client should not send it. Like Postfix ("message size N exceeds size
limit M of server X"), every recipient is bounced with 5.3.4 (RFC 3463 §3.4: message
too big for system) without MAIL FROM. `SIZE` without a number or `SIZE 0` means no
fixed limit (RFC 1870 §4).
"""

# RFC 3463 §3.4: X.3.4 message too big for system.
STATUS_TOO_BIG = "5.3.4"


def server_size_limit(esmtp_extensions: dict[str, str]) -> int | None:
    """The limit the server announced in EHLO, or None for none (or an unreadable one)."""
    value = esmtp_extensions.get("size", "").strip()
    if not value.isascii() or not value.isdigit():
        return None
    limit = int(value)
    return limit if limit > 0 else None


def size_refusal(esmtp_extensions: dict[str, str], message_size: int, label: str) -> str | None:
    """The diagnostic when a message of `message_size` octets exceeds the server's limit, else None."""
    limit = server_size_limit(esmtp_extensions)
    if limit is None or message_size <= limit:
        return None
    return f"message size {message_size} exceeds size limit {limit} of server {label}"
