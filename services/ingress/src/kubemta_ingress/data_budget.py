"""A process-wide budget for message data in flight: sessions over it get `452 4.3.1`, never an OOM kill.

Each session holds the message it is receiving in memory until the broker confirmed it, so
a thousand clients each sending a 10 MB message at once would need 10 GB. Every session
reserves what it receives from one `DataBudget` (KUBEMTA_MESSAGE_DATA_BUDGET) as the bytes
arrive and gives it back once its DATA was answered. A session whose next block does not fit
stops keeping its data (it reads the rest and drops it: the client must send its final dot
before it can be answered) and gets `452 4.3.1 Insufficient system storage` (RFC 3463 §3.4:
X.3.1 mail system full; Postfix' reply when its queue has no room), a temporary refusal, so
the client retries later. While nothing fits at all, MAIL is answered the same way at once;
a MAIL `SIZE=` (RFC 1870) larger than what is free right now too.

What a message costs in memory is a small multiple of its size while it is being queued (the
data, the message with its trace header, the serialised bus message), so the budget should be
about a third of the memory the ingress may use for messages.
"""

from dataclasses import dataclass

INSUFFICIENT_STORAGE = "452 4.3.1 Insufficient system storage"
"""RFC 3463 §3.4 X.3.1 (Postfix' wording); RFC 5321 §4.2.2: 452 requested action not taken: insufficient storage."""


class DataBudget:
    """Bytes of message data all sessions may hold at once."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._in_use = 0

    @property
    def in_use(self) -> int:
        """Bytes held now."""
        return self._in_use

    @property
    def available(self) -> int:
        """Bytes that can still be reserved."""
        return max(0, self.capacity - self._in_use)

    def reserve(self, size: int) -> bool:
        """Take `size` bytes if they fit; False (and nothing taken) when they do not."""
        if size > self.available:
            return False
        self._in_use += size
        return True

    def release(self, size: int) -> None:
        """Give back `size` bytes taken with `reserve`."""
        self._in_use = max(0, self._in_use - size)

    def reservation(self) -> "Reservation":
        """A running reservation for one message."""
        return Reservation(self)


@dataclass(slots=True)
class Reservation:
    """What one message being received holds of the budget."""

    budget: DataBudget
    held: int = 0

    def grow(self, size: int) -> bool:
        """Hold `size` more bytes; False when the budget has no room for them (nothing more is held then)."""
        if not self.budget.reserve(size):
            return False
        self.held += size
        return True

    def release(self) -> None:
        """Give back everything held (idempotent)."""
        self.budget.release(self.held)
        self.held = 0


def declared_size(mail_options: list[str]) -> int:
    """The `SIZE=` value of MAIL FROM's parameters (RFC 1870 §6), 0 when absent or unreadable."""
    for option in mail_options:
        name, _, value = option.partition("=")
        if name.upper() == "SIZE" and value.isascii() and value.isdigit() and len(value) <= 18:
            return int(value)
    return 0
