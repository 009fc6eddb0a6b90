"""A bounded cache whose entries expire: TTL per entry, least recently used evicted first.

The clock is injectable (a monotonic clock by default) so tests can move time. The
dns-resolver keeps its routes and MTA-STS policies here, the ingress its recipient
verification answers.
"""

import time
from collections import OrderedDict
from collections.abc import Callable


class TtlLruCache[K, V]:
    """At most `max_size` entries; each one lives until its own expiry time."""

    def __init__(self, max_size: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._max_size = max_size
        self._clock = clock
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: K) -> V | None:
        """The value stored under `key` if it has not expired (and mark it recently used)."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, value = entry
        if self._clock() >= expires:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return value

    def get_with_ttl(self, key: K) -> tuple[V, float] | None:
        """Like `get`, with the seconds the value has left (the dns-resolver's route answers say how fresh they are)."""
        value = self.get(key)
        if value is None:
            return None
        return value, self._entries[key][0] - self._clock()

    def put(self, key: K, value: V, ttl: float) -> None:
        """Store `value` for `ttl` seconds; a TTL of 0 or less (or a cache of size 0) stores nothing."""
        if ttl <= 0 or self._max_size <= 0:
            self._entries.pop(key, None)
            return
        self._entries[key] = (self._clock() + ttl, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max_size:
            self._entries.popitem(last=False)
