"""The tracker API's admin routes: POST /v1/queue/{flush,hold,release,delete} (admin tokens only).

Each route validates its JSON body (pydantic; a selector names exactly one of queue_id, sender,
domain, or `all` where the command takes it; hostile values -> 422 without echoing them), runs
the command of admin_ops.py with the token's name as the actor, and answers how many messages
it moved right away (and the id of the decision it recorded). 503 when the broker is not
reachable or a publish was not confirmed: the command may have done part of its work (what it
did is in its `admin_action` event), and repeating it is safe.
"""

from typing import Annotated, Any, Self

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field, StrictBool, model_validator

from kubemta_common.errors import TransientError
from kubemta_tracker.admin_ops import AdminOps
from kubemta_tracker.auth import require_admin
from kubemta_tracker.context import TrackerContext, tracker_context
from kubemta_tracker.selectors import Selector

MAX_FIELD = 1024
"""Longer than any valid selector value (Selector.parse has the exact limits): refused before it is read."""

Admin = Annotated[str, Depends(require_admin)]
Context = Annotated[TrackerContext, Depends(tracker_context)]
Text = Annotated[str | None, Field(default=None, max_length=MAX_FIELD)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FlushRequest(_Body):
    """Flush the retry queues: one destination domain's jobs, or all (no domain, or `all: true`)."""

    domain: Text = None
    all: StrictBool = False

    @model_validator(mode="after")
    def _valid(self) -> Self:
        if self.domain is not None:
            if self.all:
                raise ValueError("give domain or all, not both")
            Selector.parse(domain=self.domain)
        return self


class SelectorRequest(_Body):
    """Exactly one of queue_id, sender (an address, or <> for the null sender) or domain."""

    queue_id: Text = None
    sender: Text = None
    domain: Text = None

    def selector(self) -> Selector:
        """The validated selector (ValueError when it is not one)."""
        return Selector.parse(queue_id=self.queue_id, sender=self.sender, domain=self.domain)

    @model_validator(mode="after")
    def _valid(self) -> Self:
        self.selector()
        return self


class ReleaseRequest(SelectorRequest):
    """As a selector, or `all: true` alone (everything on `held`)."""

    all: StrictBool = False

    def selector(self) -> Selector:
        return Selector.parse(
            queue_id=self.queue_id, sender=self.sender, domain=self.domain, all=self.all, allow_all=True
        )


class DeleteRequest(SelectorRequest):
    """As a selector; `dsn: true` bounces the deleted recipients to the sender."""

    dsn: StrictBool = False


def admin_ops(request: Request, context: Context) -> AdminOps:
    """Dependency: this replica's AdminOps (one per app, so its commands run one at a time)."""
    ops: AdminOps | None = getattr(request.app.state, "admin_ops", None)
    if ops is None:
        if context.broker is None or context.publisher is None:
            raise HTTPException(503, "this tracker has no broker connection")
        ops = AdminOps(
            context.broker,
            context.publisher,
            context.events,
            retry_delays=context.settings.retry_schedule,
            timeout=context.settings.publish_timeout,
        )
        request.app.state.admin_ops = ops
    return ops


Ops = Annotated[AdminOps, Depends(admin_ops)]
router = APIRouter(prefix="/v1/queue", tags=["queue administration"])


def _unavailable(exc: TransientError) -> HTTPException:
    return HTTPException(503, f"the broker did not take the command: {exc}")


@router.post("/flush", summary="Retry deferred jobs now (one destination domain, or all)")
async def flush(actor: Admin, ops: Ops, body: FlushRequest | None = None) -> dict[str, int]:
    domain = body.domain if body is not None else None
    try:
        return {"flushed": await ops.flush(domain, actor=actor)}
    except TransientError as exc:
        raise _unavailable(exc) from None


@router.post("/hold", summary="Hold matching mail: deferred jobs move to held now, the owners hold the rest")
async def hold(actor: Admin, ops: Ops, body: SelectorRequest) -> dict[str, Any]:
    try:
        decision_id, moved = await ops.hold(body.selector(), actor=actor)
    except TransientError as exc:
        raise _unavailable(exc) from None
    return {"decision_id": decision_id, "held": moved}


@router.post("/release", summary="Release held mail back where it came from")
async def release(actor: Admin, ops: Ops, body: ReleaseRequest) -> dict[str, Any]:
    try:
        decision_id, moved = await ops.release(body.selector(), actor=actor)
    except TransientError as exc:
        raise _unavailable(exc) from None
    return {"decision_id": decision_id, "released": moved}


@router.post("/delete", summary="Delete matching mail: held mail now, the owners delete the rest")
async def delete(actor: Admin, ops: Ops, body: DeleteRequest) -> dict[str, Any]:
    try:
        decision_id, moved = await ops.delete(body.selector(), dsn=body.dsn, actor=actor)
    except TransientError as exc:
        raise _unavailable(exc) from None
    return {"decision_id": decision_id, "deleted": moved}
