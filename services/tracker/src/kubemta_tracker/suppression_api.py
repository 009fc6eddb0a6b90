"""The tracker API's suppression list routes (docs/suppression.md).

- `GET /v1/suppressions?domain=&after=&limit=` (read): live entries in address order, a page at a time
  (`after`: the last address of the previous page; `next` in the answer, null on the last page).
- `GET /v1/suppressions/{address}` (read): one live entry, 404 when the address is not suppressed.
- `POST /v1/suppressions {address, reason, ttl}` (admin): appends an add to the `suppressions` stream, waits
  for its confirm and then until this replica indexed it (suppression_sync.py), so the next check on this
  replica sees it; answers the entry.
- `DELETE /v1/suppressions/{address}` (admin): the same with a remove; 404 when the address is not suppressed
  (nothing is appended).
- `POST /v1/suppressions/check {addresses: [...]}` (read, like the Idempotency-Key claims: the ingress sends its
  service token): the live entries among up to `MAX_CHECK` addresses, straight from the index (no barrier: a
  check is on every recipient's path, and an entry is indexed within about 0.1 s of its confirm, ingest.py).

Addresses are validated and normalized as the writers do it (kubemta_common.events.suppression_log
`normalize_address`: an addr-spec of at most 254 octets, no spaces, controls, CR or LF; lower-cased); a
reason is at most 200 printable characters; a TTL is seconds in (0, KUBEMTA_SUPPRESSION_TTL]. A bad value is a
422 naming the field, never echoing it. Writes answer 503 when the stream did not confirm (nothing changed,
repeat it) or the change was confirmed but not indexed here within `KUBEMTA_SYNC_TIMEOUT` (it is in effect; this
replica is behind).
"""

import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query
from pydantic import BaseModel, ConfigDict, Field, field_validator

from kubemta_common.events.suppression_log import ADMIN, MAX_ADDRESS, MAX_REASON, change, normalize_address
from kubemta_tracker import metrics
from kubemta_tracker.auth import require_admin, require_read
from kubemta_tracker.context import TrackerContext, tracker_context
from kubemta_tracker.times import rfc3339

MAX_LIMIT = 1000
MAX_CHECK = 1000
"""Most addresses one check asks for (the ingress' KUBEMTA_MAX_RECIPIENTS is 1000 by default)."""
MAX_RAW_ADDRESS = 1024
"""Longest item of a check read at all (longer ones are no address: 422)."""
MAX_DOMAIN = 253

Context = Annotated[TrackerContext, Depends(tracker_context)]
Reader = Annotated[str, Depends(require_read)]
Admin = Annotated[str, Depends(require_admin)]

router = APIRouter(prefix="/v1/suppressions")


def _address(value: str) -> str:
    try:
        return normalize_address(value)
    except ValueError as exc:
        raise HTTPException(422, f"address: {exc}") from None


class AddRequest(BaseModel):
    """An operator's entry: suppress `address` for `ttl` seconds (default and most: KUBEMTA_SUPPRESSION_TTL)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    address: Annotated[str, Field(max_length=MAX_ADDRESS)]
    reason: Annotated[str, Field(default="", max_length=MAX_REASON)] = ""
    ttl: Annotated[float | None, Field(default=None, gt=0)] = None

    @field_validator("address")
    @classmethod
    def _valid_address(cls, value: str) -> str:
        return normalize_address(value)

    @field_validator("reason")
    @classmethod
    def _printable(cls, value: str) -> str:
        if not value.isprintable():
            raise ValueError("the reason must be printable text on one line")
        return value


class CheckRequest(BaseModel):
    """The addresses the ingress is about to accept."""

    model_config = ConfigDict(extra="forbid")

    addresses: Annotated[list[Annotated[str, Field(max_length=MAX_RAW_ADDRESS)]], Field(max_length=MAX_CHECK)]


def entry_json(row: dict[str, Any]) -> dict[str, Any]:
    """An index row as the API answers it (times RFC 3339 UTC)."""
    return {
        "address": row["address"],
        "domain": row["domain"],
        "reason": row["reason"],
        "source": row["source"],
        "actor": row["actor"],
        "queue_id": row["queue_id"],
        "diagnostic": row["diagnostic"],
        "since": rfc3339(row["since"]),
        "expires": rfc3339(row["expires"]),
    }


@router.get("", summary="Live suppression entries in address order, a page at a time")
async def list_suppressions(
    context: Context,
    _caller: Reader,
    domain: Annotated[str | None, Query(min_length=1, max_length=MAX_DOMAIN)] = None,
    after: Annotated[str | None, Query(min_length=1, max_length=MAX_RAW_ADDRESS)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
) -> dict[str, Any]:
    rows = await context.index.read(
        context.index.reader.suppressions,
        domain=None if domain is None else domain.lower(),
        after=None if after is None else after.lower(),
        limit=limit,
        now=time.time(),
    )
    return {
        "suppressions": [entry_json(row) for row in rows],
        "next": rows[-1]["address"] if len(rows) == limit else None,
    }


@router.post("/check", summary="The live entries among these addresses (the ingress' check)")
async def check(context: Context, _caller: Reader, body: CheckRequest) -> dict[str, Any]:
    wanted: list[str] = []
    for raw in body.addresses:
        try:
            wanted.append(normalize_address(raw))
        except ValueError:
            continue  # no address can be suppressed
    rows = await context.index.read(context.index.reader.suppressed, wanted, time.time()) if wanted else []
    metrics.SUPPRESSION_CHECKS.labels(result="suppressed").inc(len(rows))
    metrics.SUPPRESSION_CHECKS.labels(result="not_suppressed").inc(len(body.addresses) - len(rows))
    return {"suppressed": [entry_json(row) for row in rows]}


@router.get("/{address:path}", summary="One live suppression entry")
async def show(
    context: Context, _caller: Reader, address: Annotated[str, Path(max_length=MAX_RAW_ADDRESS)]
) -> dict[str, Any]:
    row = await context.index.read(context.index.reader.suppression, _address(address), time.time())
    if row is None:
        raise HTTPException(404, "this address is not suppressed")
    return entry_json(row)


async def _apply(context: Context, action: str, record: Any) -> None:
    """Publish `record`, wait for its confirm and for this replica to index it; 503 when either does not come."""
    log = context.suppression_log
    if log is None:
        metrics.SUPPRESSION_CHANGES.labels(action=action, result="unconfirmed").inc()
        raise HTTPException(503, "the suppressions stream is not available")
    context.applied.expect(record.change_id)
    if not await log.append(record):
        context.applied.forget(record.change_id)
        metrics.SUPPRESSION_CHANGES.labels(action=action, result="unconfirmed").inc()
        raise HTTPException(503, "the suppressions stream did not confirm the change: nothing changed, repeat it")
    if not await context.applied.wait(record.change_id, context.settings.sync_timeout):
        metrics.SUPPRESSION_CHANGES.labels(action=action, result="unsynced").inc()
        raise HTTPException(503, "the change is stored but this replica did not index it in time")
    metrics.SUPPRESSION_CHANGES.labels(action=action, result="applied").inc()


@router.post("", summary="Suppress an address (an operator's entry)")
async def add(context: Context, actor: Admin, body: AddRequest) -> dict[str, Any]:
    longest = context.settings.suppression_ttl
    ttl = longest if body.ttl is None else body.ttl
    if ttl > longest:
        raise HTTPException(422, f"ttl: at most KUBEMTA_SUPPRESSION_TTL ({int(longest)} seconds)")
    record = change(body.address, suppressed=True, source=ADMIN, actor=actor, reason=body.reason, ttl=ttl)
    await _apply(context, "add", record)
    row = await context.index.read(context.index.reader.suppression, record.address, time.time())
    if row is None:  # removed or replaced by a later change in between
        raise HTTPException(409, "a later change of this address replaced the entry")
    return entry_json(row)


@router.delete("/{address:path}", summary="Remove an address from the suppression list")
async def remove(
    context: Context, actor: Admin, address: Annotated[str, Path(max_length=MAX_RAW_ADDRESS)]
) -> dict[str, Any]:
    normalized = _address(address)
    row = await context.index.read(context.index.reader.suppression, normalized, time.time())
    if row is None:
        raise HTTPException(404, "this address is not suppressed")
    record = change(normalized, suppressed=False, source=ADMIN, actor=actor)
    await _apply(context, "remove", record)
    return {"address": normalized, "removed": True}
