"""Why a message arrived twice, from the tracker's timeline of it (GET /v1/messages, /v1/messages/{queue_id}).

- "queued twice (client retry not recognised)": the Message-ID has more than one queue id: the ingress
  queued a client's retry of a message it had queued already (the first copy's `received` event never
  reached the stream, e.g. the ingress was killed between the inbound confirm and the event's confirm, or
  the tracker could not be asked).
- "one job routed twice and attempted twice": two copies of the job's deliver message went to the worker
  (a route job handled twice, or a redelivery whose check found nothing or could not ask the tracker).
- "one job attempted twice, routed once": the same, where one of the two `routed` events never reached the
  stream (the resolver was killed between its publish and the event), or a redelivered deliver job whose
  first attempt the worker's check did not see.
- "sent again, first attempt never recorded": one `attempted` event: the worker was killed after the
  final dot and before it recorded the attempt (the window at-least-once delivery cannot close).
"""

import json
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from typing import Any

MAX_EXPLAINED = 300
TIMEOUT = 5.0


def _get(base: str, token: str, path: str) -> Any:
    request = urllib.request.Request(base + path, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
        return json.loads(response.read())


def cause(base: str, token: str, message_id: str) -> str:
    query = urllib.parse.urlencode({"message_id": message_id, "limit": 10})
    found = _get(base, token, f"/v1/messages?{query}")["messages"]
    if len(found) > 1:
        return "queued twice (client retry not recognised)"
    if not found:
        return "not in the tracker's index"
    timeline = _get(base, token, "/v1/messages/" + urllib.parse.quote(found[0]["queue_id"], safe=""))["timeline"]
    attempted = Counter(str(entry.get("job_id")) for entry in timeline if entry.get("kind") == "attempted")
    routed = Counter(str(entry.get("job_id")) for entry in timeline if entry.get("kind") == "routed")
    twice = [job for job, n in attempted.items() if n > 1]
    if not twice:
        return "sent again, first attempt never recorded"
    if any(routed[job] > 1 for job in twice):
        return "one job routed twice and attempted twice"
    return "one job attempted twice, routed once"


def explain(base: str, token: str, message_ids: list[str]) -> dict[str, int]:
    """Causes of the duplicates of the first MAX_EXPLAINED Message-IDs (blocking; "unknown" on errors)."""
    causes: Counter[str] = Counter()
    for message_id in message_ids[:MAX_EXPLAINED]:
        try:
            causes[cause(base, token, message_id)] += 1
        except (urllib.error.URLError, OSError, ValueError, KeyError, TypeError):
            causes["unknown (tracker did not answer)"] += 1
    return dict(causes.most_common())
