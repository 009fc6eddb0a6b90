"""Queue ids: short, unique, roughly time-ordered identifiers for accepted messages."""

import secrets
import time

_ALPHABET = "0123456789BCDFGHJKLMNPQRSTVWXYZbcdfghjklmnpqrstvwxyz"  # no vowels: no accidental words


def new_queue_id() -> str:
    """A 16-character id: 48 bits of milliseconds then 48 random bits, in base 52."""
    value = (int(time.time() * 1000) << 48) | secrets.randbits(48)
    chars = []
    for _ in range(16):
        value, digit = divmod(value, len(_ALPHABET))
        chars.append(_ALPHABET[digit])
    return "".join(reversed(chars))
