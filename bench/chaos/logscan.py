"""What the services' logs (of every process of a run, the killed ones too) say about duplicates and errors.

Each lifecycle event is one JSON log line (`"event": "<kind>"`); a `duplicate` event is a guard that kept
a message from being queued or sent twice (its `details.reason`: client-retry, redelivered-input,
redelivered-job, ...). ERROR lines are counted per service.
"""

import json
from collections import Counter
from pathlib import Path


def scan(workdir: Path) -> tuple[Counter[str], Counter[str]]:
    """(duplicate events by "service reason", ERROR lines by service) over every `*.log` in `workdir`."""
    guards: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    for path in sorted(workdir.glob("*.log")):
        with path.open("rb") as log:
            for raw in log:
                duplicate = b'"event": "duplicate"' in raw
                if not duplicate and b'"level": "error"' not in raw:
                    continue
                try:
                    line = json.loads(raw)
                except ValueError:
                    continue
                if not isinstance(line, dict):
                    continue
                service = str(line.get("service") or path.stem.split(".")[0])
                if line.get("level") == "error":
                    errors[service] += 1
                if duplicate and line.get("event") == "duplicate":
                    details = line.get("details")
                    reason = details.get("reason", "?") if isinstance(details, dict) else "?"
                    guards[f"{service} {reason}"] += 1
    return guards, errors
