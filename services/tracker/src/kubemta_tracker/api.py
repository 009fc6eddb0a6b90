"""The tracker's HTTP API (read side): find, show, queue summary, held list, and the duplicate checks.

Every route needs a bearer token (auth.py); the admin routes (flush, hold, release, delete)
live in admin_api.py, the Idempotency-Key claims of the ingress' HTTP API in idempotency_api.py, the
suppression list in suppression_api.py.
JSON everywhere, times RFC 3339 UTC, errors `{"detail": "..."}` (also for invalid input: 422 with
every problem named, never echoing the value). Query values are
bounded in length and only ever bound as SQL parameters (queries.py): a hostile Message-ID or
address is a string that matches nothing. `duplicates/received/{dedup_key}` reads the index as
it is, without a barrier (it is asked for every incoming message; ingest.py says how fresh the
index is): a client's retry within about 0.1 s of the first copy's 250 may not be recognised.
The duplicate checks `jobs/{job_id}/delivered` and `recorded` first wait for a barrier
(sync.py): 503 when the index did not catch up in time, and the caller then goes on as it
would without a tracker. Request bodies are bounded in size
(`KUBEMTA_TRACKER_MAX_BODY`) and in time (`KUBEMTA_TRACKER_BODY_TIMEOUT`) before routing and
authentication (body_limit.py).
"""

import time
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from kubemta_common.amqp.topology import retry_queue_name
from kubemta_tracker import metrics
from kubemta_tracker.admin_api import router as admin_router
from kubemta_tracker.auth import TokenAuth, require_read
from kubemta_tracker.body_limit import BodyLimit
from kubemta_tracker.context import TrackerContext, tracker_context
from kubemta_tracker.idempotency_api import router as idempotency_router
from kubemta_tracker.queries import FindQuery
from kubemta_tracker.suppression_api import router as suppression_router
from kubemta_tracker.times import rfc3339

MAX_LIMIT = 1000
MAX_TEXT = 998
"""Longest query value (RFC 5322 §2.1.1's line limit: a Message-ID or an address is shorter)."""
MAX_ID = 128
"""Longest queue id or job id (kubemta's are 16 and 16 + domain characters; a domain is at most 253)."""
MAX_JOB_ID = 300
MAX_DOMAIN = 255
STATES = r"^(inbound|route|deliver|results|held|done|open|retry|retry\.[0-9a-z.]{1,16})$"
"""The states `GET /v1/messages?state=` takes."""
MAX_WINDOW = 366 * 86400.0

Context = Annotated[TrackerContext, Depends(tracker_context)]
Reader = Annotated[str, Depends(require_read)]


def _epoch(value: datetime | None) -> float | None:
    if value is None:
        return None
    return (value if value.tzinfo is not None else value.replace(tzinfo=UTC)).timestamp()


router = APIRouter(prefix="/v1")


@router.get("/messages", summary="Find messages (newest first)")
async def find_messages(
    context: Context,
    _caller: Reader,
    queue_id: Annotated[str | None, Query(min_length=1, max_length=MAX_ID)] = None,
    message_id: Annotated[str | None, Query(min_length=1, max_length=MAX_TEXT)] = None,
    sender: Annotated[str | None, Query(max_length=MAX_TEXT)] = None,
    recipient: Annotated[str | None, Query(min_length=1, max_length=MAX_TEXT)] = None,
    since: datetime | None = None,
    until: datetime | None = None,
    domain: Annotated[str | None, Query(min_length=1, max_length=MAX_DOMAIN)] = None,
    state: Annotated[str | None, Query(pattern=STATES)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
) -> dict[str, Any]:
    """Every given filter must match; `domain`: a job for that destination; `state`: inbound, route, deliver,
    results, held, retry or retry.<delay>, done, or open (not done)."""
    query = FindQuery(
        domain=domain,
        state=state,
        queue_id=queue_id,
        message_id=message_id,
        sender=sender,
        recipient=recipient,
        since=_epoch(since),
        until=_epoch(until),
        limit=limit,
    )
    found = await context.index.read(context.index.reader.find, query)
    for row in found:
        row["received_at"] = rfc3339(row["received_at"])
    return {"messages": found}


@router.get("/messages/{queue_id}", summary="Show a message: envelope, headers, jobs and timeline")
async def show_message(
    context: Context, _caller: Reader, queue_id: Annotated[str, Path(min_length=1, max_length=MAX_ID)]
) -> dict[str, Any]:
    message = await context.index.read(context.index.reader.message, queue_id)
    if message is None:
        raise HTTPException(404, "no such message in the index")
    message["received_at"] = rfc3339(message["received_at"])
    for job in message["jobs"]:
        job["next_attempt"] = rfc3339(job["next_attempt"])
    for entry in message["timeline"]:
        entry["time"] = rfc3339(entry["time"])
    return message


@router.get("/queue/summary", summary="Open mail per stage, retry tier and destination domain (oldest age)")
async def queue_summary(context: Context, _caller: Reader) -> dict[str, Any]:
    summary = await context.index.read(context.index.reader.summary, time.time())
    retry = {name: {"jobs": 0, "oldest_seconds": 0.0} for name in _retry_names(context)}
    retry.update(summary["retry"])
    summary["retry"] = retry
    summary["broker"] = await context.queue_depths()
    return summary


def _retry_names(context: TrackerContext) -> list[str]:
    return [retry_queue_name(delay) for delay in sorted(set(context.settings.retry_schedule))]


@router.get("/queue/held", summary="What sits on the held queue")
async def held_list(context: Context, _caller: Reader) -> dict[str, Any]:
    held = await context.index.read(context.index.reader.held)
    for row in held:
        row["held_at"] = rfc3339(row["held_at"])
    return {"held": held}


@router.get("/duplicates/received/{dedup_key}", summary="The first message a client's retry duplicates")
async def duplicate_received(
    context: Context,
    _caller: Reader,
    dedup_key: Annotated[str, Path(pattern=r"^[0-9a-fA-F]{16,128}$")],
    within: Annotated[float, Query(ge=0, le=MAX_WINDOW)] = 3600.0,
) -> dict[str, str]:
    """Without a barrier (this is asked for every incoming message): an event confirmed about 0.1 s before
    (ingest.INDEXED_WITHIN) is normally indexed, so a client's retry within about 0.1 s of the first copy's 250
    may not be recognised, and is queued again (at least once)."""
    queue_id = await context.index.read(context.index.reader.first_queue_id, dedup_key.lower(), time.time() - within)
    if queue_id is None:
        raise HTTPException(404, "no message with this dedup key within the window")
    return {"queue_id": queue_id}


async def _synced(context: TrackerContext) -> None:
    if not await context.barriers.sync():
        metrics.BARRIER_SYNCS.labels(result="timeout").inc()
        raise HTTPException(503, "the index did not catch up with the events stream in time")
    metrics.BARRIER_SYNCS.labels(result="synced").inc()


@router.get("/duplicates/jobs/{job_id}/delivered", summary="Recipients of a job already recorded as delivered")
async def duplicate_delivered(
    context: Context, _caller: Reader, job_id: Annotated[str, Path(min_length=1, max_length=MAX_JOB_ID)]
) -> dict[str, Any]:
    await _synced(context)
    return {"recipients": await context.index.read(context.index.reader.delivered_recipients, job_id)}


@router.get("/duplicates/recorded", summary="Whether a queued, routed or fate event was recorded")
async def duplicate_recorded(
    context: Context,
    _caller: Reader,
    kind: Literal["queued", "routed", "fate"],
    queue_id: Annotated[str, Query(max_length=MAX_ID)] = "",
    job_id: Annotated[str, Query(max_length=MAX_JOB_ID)] = "",
    attempt: Annotated[int | None, Query(ge=0, le=1_000_000)] = None,
) -> dict[str, bool]:
    if kind == "queued" and not queue_id:
        raise HTTPException(422, "kind=queued needs a queue_id")
    if kind != "queued" and not job_id:
        raise HTTPException(422, f"kind={kind} needs a job_id")
    await _synced(context)
    recorded = await context.index.read(
        context.index.reader.recorded, kind, queue_id=queue_id, job_id=job_id, attempt=attempt
    )
    return {"recorded": recorded}


async def _invalid(_request: Request, exc: Exception) -> JSONResponse:
    """422 with a plain-text detail naming each bad field (the values themselves are not echoed)."""
    assert isinstance(exc, RequestValidationError)
    problems = "; ".join(
        f"{'.'.join(str(part) for part in error.get('loc', ()))}: {error.get('msg', 'invalid')}"
        for error in exc.errors()
    )
    return JSONResponse({"detail": problems or "invalid request"}, status_code=422)


def create_app(context: TrackerContext) -> FastAPI:
    """The tracker API over `context` (read routes here; admin routes from admin_api.py, Idempotency-Key claims
    from idempotency_api.py)."""
    app = FastAPI(
        title="kubemta tracker",
        summary="Where is my mail: message tracking, queue summaries, duplicate checks and queue administration",
        version="1",
        docs_url=None,
        redoc_url=None,
    )
    app.state.tracker = context
    app.state.auth = TokenAuth(context.settings.tracker_read_tokens, context.settings.tracker_admin_tokens)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.include_router(router)
    app.include_router(admin_router)
    app.include_router(idempotency_router)
    app.include_router(suppression_router)
    app.add_middleware(
        BodyLimit, max_body=context.settings.tracker_max_body, timeout=context.settings.tracker_body_timeout
    )
    return app
