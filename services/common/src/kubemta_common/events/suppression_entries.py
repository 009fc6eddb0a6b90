"""The suppression list as the ingress reads it from a tracker: the entries of `POST /v1/suppressions/check`
(services/tracker suppression_api.py), checked against what the API promises (tracker_client.py asks; a
ValueError here makes the answer unknown, and the ingress fails open)."""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

MAX_SUPPRESSION_CHECK = 1000
"""Most addresses the tracker takes in one check (suppression_api.py MAX_CHECK)."""


@dataclass(frozen=True, slots=True)
class SuppressionEntry:
    """A live entry of the suppression list (`TrackerClient.suppressed`): `source` "bounce" (a hard bounce, `reason`
    its class) or "admin" (an operator's, `reason` their text, unchecked: sanitize before use), `since` and
    `expires` as epoch seconds."""

    address: str
    source: str
    reason: str
    since: float
    expires: float


class SuppressionLookup(Protocol):
    """What the ingress' suppression check asks the tracker (`TrackerClient.suppressed`)."""

    async def suppressed(self, addresses: Sequence[str], *, within: float) -> dict[str, SuppressionEntry] | None:
        """The live entries among `addresses`, by normalized address; None when unknown."""
        ...


def _epoch(value: object) -> float:
    if not isinstance(value, str):
        raise ValueError("a suppression entry with a time that is not text")
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        raise ValueError("a suppression entry with a time that is not RFC 3339") from None


def suppression_entries(answer: Any) -> dict[str, SuppressionEntry]:
    """The entries of a check's answer; ValueError when it is not what the API promises."""
    items = answer.get("suppressed") if isinstance(answer, dict) else None
    if not isinstance(items, list):
        raise ValueError("a suppression check answer without a 'suppressed' list")
    entries: dict[str, SuppressionEntry] = {}
    for item in items:
        if not isinstance(item, dict):
            raise ValueError("a suppression check answer with an entry that is not an object")
        address, source, reason = item.get("address"), item.get("source"), item.get("reason", "")
        if not isinstance(address, str) or not isinstance(source, str) or not isinstance(reason, str):
            raise ValueError("a suppression entry without address, source or reason")
        entries[address.lower()] = SuppressionEntry(
            address.lower(), source, reason, _epoch(item.get("since")), _epoch(item.get("expires"))
        )
    return entries
