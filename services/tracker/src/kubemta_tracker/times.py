"""Times as the tracker API writes them: RFC 3339 UTC with milliseconds."""

from datetime import UTC, datetime


def rfc3339(epoch: float | None) -> str | None:
    """Epoch seconds as RFC 3339 UTC (`2026-03-02T12:00:00.123Z`), None for None."""
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
