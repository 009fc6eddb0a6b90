"""The tracker API's Idempotency-Key routes: claim a key for one request of the ingress' HTTP API, release it.

`POST /v1/idempotency/claims {key, fingerprint, claimant, window}` appends an `idempotency_claim` event to the
`events` stream and waits until this replica indexed it (sync.py `append`: the claim is its own barrier, so the
index then holds everything confirmed before it, on whichever replica it was appended), then answers from the
index (claims.py): `{"state": "done", "queue_id", "fingerprint"}` when a message with dedup key `idem:<key>` was
received within `window` seconds, else `{"state": "claimed"}` when this claimant holds the key, else
`{"state": "in_progress", "fingerprint"}` (the holder's). `POST /v1/idempotency/releases {key, claimant}`
appends an `idempotency_release` (the claimant's request failed before anything was queued) and waits until it
is indexed, so a claim made after the answer comes after the release in the stream. Both: 503 when the index
did not catch up within `KUBEMTA_SYNC_TIMEOUT` (the ingress then answers 503 and queues nothing).

Read token (as the duplicate checks); JSON bodies bounded like every request (body_limit.py) and checked
field by field: `key` and `fingerprint` 64 hex digits (the ingress' SHA-256; never the client's own key),
`claimant` 1-64 of `A-Za-z0-9._~-`, `window` a number of seconds in (0, 7 days]; unknown fields refused. 422
names each bad field, never its value.
"""

import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel, ConfigDict, Field

from kubemta.v1 import events_pb2
from kubemta_tracker import metrics
from kubemta_tracker.auth import require_read
from kubemta_tracker.context import TrackerContext, tracker_context

MAX_WINDOW = 7 * 86400.0
"""Longest window a claim may ask for (the ingress' KUBEMTA_IDEMPOTENCY_WINDOW is a day by default)."""
HEX64 = r"^[0-9a-f]{64}$"
CLAIMANT = r"^[A-Za-z0-9._~-]{1,64}$"

Context = Annotated[TrackerContext, Depends(tracker_context)]
Reader = Annotated[str, Depends(require_read)]

router = APIRouter(prefix="/v1/idempotency")


class ClaimRequest(BaseModel):
    """A claim of an Idempotency-Key for one request attempt."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    key: Annotated[str, Field(pattern=HEX64, description="hex SHA-256 of the principal and its Idempotency-Key")]
    fingerprint: Annotated[str, Field(pattern=HEX64, description="hex SHA-256 of the request")]
    claimant: Annotated[str, Field(pattern=CLAIMANT, description="random id of this request attempt")]
    window: Annotated[float, Field(gt=0, le=MAX_WINDOW, description="seconds a key is remembered")]


class ReleaseRequest(BaseModel):
    """The release of a claim whose request queued nothing."""

    model_config = ConfigDict(extra="forbid")

    key: Annotated[str, Field(pattern=HEX64)]
    claimant: Annotated[str, Field(pattern=CLAIMANT)]


async def _append(context: TrackerContext, event: events_pb2.LifecycleEvent) -> None:
    if not await context.barriers.append(event):
        metrics.BARRIER_SYNCS.labels(result="timeout").inc()
        raise HTTPException(503, "the index did not catch up with the events stream in time")
    metrics.BARRIER_SYNCS.labels(result="synced").inc()


@router.post("/claims", summary="Claim an Idempotency-Key for one request (decided in the events stream's order)")
async def claim(context: Context, _caller: Reader, body: ClaimRequest) -> dict[str, Any]:
    event = events_pb2.LifecycleEvent(
        idempotency_claim=events_pb2.IdempotencyClaim(
            key=body.key, fingerprint=body.fingerprint, claimant=body.claimant
        )
    )
    try:
        await _append(context, event)
    except HTTPException:
        metrics.IDEMPOTENCY_CLAIMS.labels(state="unknown").inc()
        raise
    since = time.time() - body.window
    ttl = context.settings.idempotency_claim_ttl
    found = await context.index.read(context.index.reader.idempotency, body.key, body.claimant, since, ttl)
    if found is None:  # indexed, yet not found: outside the window by the clocks, or pruned meanwhile
        metrics.IDEMPOTENCY_CLAIMS.labels(state="unknown").inc()
        raise HTTPException(503, "the claim is not in the index")
    metrics.IDEMPOTENCY_CLAIMS.labels(state=found.state).inc()
    if found.state == "done":
        return {"state": "done", "queue_id": found.queue_id, "fingerprint": found.fingerprint}
    if found.state == "in_progress":
        return {"state": "in_progress", "fingerprint": found.fingerprint}
    return {"state": "claimed"}


@router.post("/releases", summary="Release a claim whose request queued nothing")
async def release(context: Context, _caller: Reader, body: ReleaseRequest) -> dict[str, str]:
    event = events_pb2.LifecycleEvent(
        idempotency_release=events_pb2.IdempotencyRelease(key=body.key, claimant=body.claimant)
    )
    await _append(context, event)
    return {"state": "released"}
