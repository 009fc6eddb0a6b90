"""Reading delivered messages back: the decoded leaf parts, to compare what was converted with what was sent."""

import email
import email.policy


def decoded_parts(content: bytes) -> list[tuple[str, bytes]]:
    """(content type, decoded payload) of each leaf part of `content`, in order."""
    parsed = email.message_from_bytes(content, policy=email.policy.compat32)
    parts = []
    for part in parsed.walk():
        if not part.is_multipart():
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            parts.append((part.get_content_type(), payload))
    return parts
