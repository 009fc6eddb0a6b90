"""Text for a terminal from values a server sent: escaped, with human times and ages.

Every string printed by `kubemta-admin queue` passes through `printable` (or `cell`), so an address, header or
detail holding escape sequences, carriage returns or bidirectional controls cannot rewrite the operator's screen.
"""

import json
import re
from datetime import UTC, datetime, timedelta

_SIMPLE = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\"}
_DURATION = re.compile(r"^(\d+)([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
NONE = "-"


def printable(text: str, *, keep_tabs: bool = False) -> str:
    """`text` with every non-printable character (controls, format characters, line and paragraph separators,
    unusual spaces) and the backslash written as a Python-style escape."""
    out: list[str] = []
    for char in text:
        if char == "\t" and keep_tabs:
            out.append(char)
        elif char in _SIMPLE:
            out.append(_SIMPLE[char])
        elif char.isprintable():
            out.append(char)
        else:
            code = ord(char)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
    return "".join(out)


def shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def cell(value: object) -> str:
    """Any JSON value as one escaped table cell: strings as they are, lists comma-separated, null as "-"."""
    if value is None or value == "":
        return NONE
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list):
        return ",".join(cell(item) for item in value) or NONE
    return printable(json.dumps(value, ensure_ascii=True, sort_keys=True))


def as_list(value: object) -> list[object]:
    return value if isinstance(value, list) else []


def as_dict(value: object) -> dict[str, object]:
    return value if isinstance(value, dict) else {}


def as_int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value == value and abs(value) < 1e15:
        return int(value)
    return None


def human_time(value: object) -> str:
    """An RFC 3339 time as "2026-12-05 10:02:11" (UTC); anything else escaped as it came."""
    if not isinstance(value, str) or not value:
        return cell(value)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return printable(shorten(value, 40))
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def human_age(value: object) -> str:
    """Seconds as "3m12s", "1h05m", "2d04h" (the two largest units), "0s"; "-" when not a number."""
    seconds = as_int(value)
    if seconds is None or seconds < 0:
        return NONE
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def parse_when(text: str, now: datetime) -> datetime:
    """--since/--until: a duration ago ("30m", "2h", "1d") or a time ("2026-12-05 10:02", RFC 3339; UTC unless it
    names its offset). ValueError when it is neither."""
    match = _DURATION.match(text.strip())
    if match:
        return now - timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])
    moment = datetime.fromisoformat(text.strip())
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def table(headers: list[str], rows: list[list[str]], *, right: frozenset[int] = frozenset()) -> list[str]:
    """Rows under headers, columns padded to their widest cell (`right`: right-aligned columns)."""
    widths = [max([len(headers[i]), *(len(row[i]) for row in rows)]) for i in range(len(headers))]

    def line(cells: list[str]) -> str:
        padded = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))]
        return "  ".join(padded).rstrip()

    return [line(headers), *(line(row) for row in rows)]
