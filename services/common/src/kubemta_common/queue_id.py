"""Queue ids: short, unique, roughly time-ordered identifiers for accepted messages.

An id is made for every accepted message, so it is made cheaply: the random bits come from a pool filled by
one `os.urandom` call per 256 ids (each value is taken from the pool once, by an atomic `deque.popleft`, so
threads never share one; a forked child empties its copy so it never repeats its parent's), and the base-52
digits are written two at a time from a table of the 2,704 pairs.
"""

import collections
import os
import time

_ALPHABET = "0123456789BCDFGHJKLMNPQRSTVWXYZbcdfghjklmnpqrstvwxyz"  # no vowels: no accidental words
_PAIRS = tuple(high + low for high in _ALPHABET for low in _ALPHABET)
"""Two digits per entry: `_PAIRS[n]` is `n` (< 52**2) written with two characters of the alphabet."""
_BASE2 = len(_PAIRS)
_RANDOM_BYTES = 6  # 48 bits
_POOL_IDS = 256
_pool: collections.deque[int] = collections.deque()
"""48-bit random values from os.urandom, each used for one id."""


def _random48() -> int:
    """48 random bits (os.urandom's), never handed out twice."""
    try:
        return _pool.popleft()
    except IndexError:
        raw = os.urandom(_RANDOM_BYTES * _POOL_IDS)
        step = _RANDOM_BYTES
        _pool.extend(int.from_bytes(raw[start : start + step]) for start in range(step, len(raw), step))
        return int.from_bytes(raw[:_RANDOM_BYTES])


os.register_at_fork(after_in_child=_pool.clear)


def new_queue_id() -> str:
    """A 16-character id: 48 bits of milliseconds then 48 random bits, in base 52."""
    value = (int(time.time() * 1000) << 48) | _random48()
    value, d8 = divmod(value, _BASE2)
    value, d7 = divmod(value, _BASE2)
    value, d6 = divmod(value, _BASE2)
    value, d5 = divmod(value, _BASE2)
    value, d4 = divmod(value, _BASE2)
    value, d3 = divmod(value, _BASE2)
    d1, d2 = divmod(value, _BASE2)
    d1 %= _BASE2  # after the year 2291 the top digits wrap, as 16 base-52 digits always did
    pairs = _PAIRS
    return pairs[d1] + pairs[d2] + pairs[d3] + pairs[d4] + pairs[d5] + pairs[d6] + pairs[d7] + pairs[d8]
