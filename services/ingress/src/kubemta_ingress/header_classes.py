"""The email package's header classes, made once per kind instead of once per header.

CPython's `HeaderRegistry.__getitem__` builds a new class (`type(...)`) every time it makes a header object: every
header the ingress parses or writes through a policy (the HTTP API composing a message, a raw message's recipient
fields, a From: compared with the sender's identity) paid for a class creation: 16 µs each (0.8 µs from the
cache), and composing a one-recipient message made 23 of them. `OnceHeaderRegistry` makes the class of each kind
of header (address, unstructured, date, ...) once and hands it out again; the classes are the same as the stock
ones (same bases, no state of their own), so the headers they make are too.

The cache is keyed by the kind, never by the header's name: a request naming a thousand different extra headers
adds nothing to it (they all take the unstructured kind).
"""

from email.headerregistry import BaseHeader, HeaderRegistry
from email.policy import default

__all__ = ["HEADER_CLASSES", "READER", "OnceHeaderRegistry"]


class OnceHeaderRegistry(HeaderRegistry):
    """A `HeaderRegistry` that makes the class of each kind of header once."""

    def __init__(self) -> None:
        super().__init__()
        self._made: dict[type, type[BaseHeader]] = {}

    def __getitem__(self, name: str) -> type[BaseHeader]:
        kind = self.registry.get(name.lower(), self.default_class)
        made = self._made.get(kind)
        if made is None:
            made = self._made[kind] = super().__getitem__(name)
        return made

    @property
    def kinds_made(self) -> int:
        """How many header classes it made (at most one per kind in its registry, plus the default)."""
        return len(self._made)


HEADER_CLASSES = OnceHeaderRegistry()
"""The one registry of the ingress' policies (the classes do not depend on the policy that makes a header)."""
READER = default.clone(header_factory=HEADER_CLASSES)
"""`email.policy.default` with that registry: for reading header values (`READER.header_factory(name, value)`)."""
