"""The services' duplicate checks against the tracker's HTTP API (services/tracker).

After a crash, RabbitMQ redelivers what was not acknowledged, and a client whose connection
broke after the dot retries; the tracker's index of the `events` stream knows what was already
done. `TrackerClient` asks it, and answers None ("unknown") whenever it cannot tell: the tracker
unreachable, slower than `timeout` (for the whole call, body included), an HTTP error (a 503:
the tracker's barrier sync timed out), or an answer that is not what the API promises (not
JSON, a wrong type, a body over `MAX_BODY`). Callers then go on as before (at least once), so a
tracker outage costs duplicate protection, never mail. Problems are logged at WARNING at most
once per `WARN_EVERY` seconds (with a count of the ones not logged), never raised.

Every call is counted in `kubemta_duplicate_checks_total{check,result}`: check `received`
(`first_queue_id`), `delivered` (`delivered_recipients`), `queued` / `routed` / `fate`
(`recorded`); result `found`, `absent` or `unknown`.

API (contract of issue 14), all GET with `Authorization: Bearer <token>`:
- /v1/duplicates/received/{dedup_key}?within=<seconds> -> 200 {"queue_id"} | 404
- /v1/duplicates/jobs/{job_id}/delivered -> {"recipients": [RecipientOutcome as a dict]} | 503
- /v1/duplicates/recorded?kind=&queue_id=&job_id=&attempt= -> {"recorded": bool} | 503

Idempotency-Key claims of the ingress' HTTP API are different: the ingress must not queue without an answer,
so `claim_idempotency` and `release_idempotency` raise `TrackerUnavailable` instead of answering "unknown"
(same timeout and body cap), and they POST JSON (services/tracker idempotency_api.py):
- /v1/idempotency/claims {key, fingerprint, claimant, window} -> {"state": "done", "queue_id", "fingerprint"}
  | {"state": "claimed"} | {"state": "in_progress", "fingerprint"} | 503
- /v1/idempotency/releases {key, claimant} -> {"state": "released"} | 503

The ingress' suppression check (`suppressed`) answers None ("unknown") like the duplicate checks, and the caller
fails open: a suppression list protects reputation, it never stops mail. It takes its own, shorter timeout
(KUBEMTA_SUPPRESSION_CHECK_TIMEOUT) and is counted by its caller, not in the duplicate checks' metric:
- POST /v1/suppressions/check {addresses: [...]} -> {"suppressed": [{"address", "source", "reason", "since",
  "expires", ...}]} (services/tracker suppression_api.py)
"""

import asyncio
import json
import logging
import re
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol
from urllib.parse import quote

import httpx
from google.protobuf.json_format import ParseDict, ParseError

from kubemta.v1 import events_pb2
from kubemta_common.events.suppression_entries import MAX_SUPPRESSION_CHECK, SuppressionEntry, suppression_entries
from kubemta_common.logs import sanitize
from kubemta_common.metrics import DUPLICATE_CHECKS
from kubemta_common.settings import ServiceSettings

logger = logging.getLogger(__name__)

MAX_BODY = 1024 * 1024
"""Most bytes of an answer read (a job's delivered recipients are a few hundred bytes each)."""
WARN_EVERY = 60.0
"""Seconds between two WARNING lines about the tracker."""
MAX_QUEUE_ID = 128
"""Longest queue id taken from an answer."""
RECORDED_KINDS = ("queued", "routed", "fate")
OUTCOME_FIELDS = frozenset(events_pb2.RecipientOutcome.DESCRIPTOR.fields_by_name)
DEDUP_KEY = re.compile(r"[0-9a-fA-F]{16,128}")
HEX64 = re.compile(r"[0-9a-f]{64}")
"""An Idempotency-Key claim's fingerprint (hex SHA-256)."""
TOKEN = re.compile(r"[\x21-\x7e]*")
"""A bearer token goes into a header: visible ASCII only (RFC 6750 section 2.1 allows less)."""


class TrackerUnavailable(Exception):
    """The tracker could not answer an Idempotency-Key claim or release (unreachable, slower than the timeout, an
    HTTP error such as its 503, or an answer that is not what the API promises); the message says which."""


@dataclass(frozen=True, slots=True)
class IdempotencyAnswer:
    """The tracker's answer to an Idempotency-Key claim (`TrackerClient.claim_idempotency`).

    `state`: `done` (a message was queued for the key: `queue_id`, and the first claim's `fingerprint`),
    `claimed` (this claimant holds the key: go on and queue), `in_progress` (another request holds it:
    `fingerprint` is that request's)."""

    state: Literal["done", "claimed", "in_progress"]
    queue_id: str = ""
    fingerprint: str = ""


class _TrackerProblem(Exception):
    """Why the tracker's answer is unknown (logged, never raised to callers)."""


class _Warnings:
    """WARNING lines at most once per `every` seconds; the ones in between are counted and said next time."""

    def __init__(self, every: float) -> None:
        self._every = every
        self._last = -every
        self._suppressed = 0

    def warn(self, message: str) -> None:
        now = time.monotonic()
        if now - self._last < self._every:
            self._suppressed += 1
            logger.debug("%s", message)
            return
        suffix = f" ({self._suppressed} more since the last warning)" if self._suppressed else ""
        self._last = now
        self._suppressed = 0
        logger.warning("%s%s", message, suffix)


def _segment(value: str) -> str:
    """`value` as one URL path segment (slashes and dot segments encoded, so it cannot name another path)."""
    encoded = quote(value, safe="")
    return encoded.replace(".", "%2E") if encoded in (".", "..") else encoded


def _seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


class FirstQueueIds(Protocol):
    """What the ingress' duplicate check asks the tracker (`TrackerClient.first_queue_id`)."""

    def first_queue_id(self, dedup_key: str, within: float) -> Awaitable[object]:
        """The queue id of the message queued with `dedup_key` within the last `within` seconds; anything but a
        non-empty string means none or unknown."""
        ...


class DuplicateChecks(Protocol):
    """What a redelivery guard asks the tracker about recorded work (`TrackerClient.recorded`)."""

    async def recorded(
        self, kind: str, *, queue_id: str = "", job_id: str = "", attempt: int | None = None
    ) -> bool | None:
        """Was the `kind` event (queued, routed, fate) of this message or job (at `attempt`) recorded; None when
        unknown."""
        ...


class DeliveredRecipients(Protocol):
    """What the delivery-worker's redelivery guard asks the tracker (`TrackerClient.delivered_recipients`)."""

    async def delivered_recipients(self, job_id: str) -> list[events_pb2.RecipientOutcome] | None:
        """The recipients of `job_id` recorded as delivered; None when unknown."""
        ...


class TrackerClient:
    """Asks the tracker whether work was already done; None when it cannot tell."""

    def __init__(self, url: str, token: str, timeout: float, *, transport: httpx.AsyncBaseTransport | None = None):
        if not TOKEN.fullmatch(token):
            raise ValueError("the tracker token must be visible ASCII characters (no spaces or line breaks)")
        self._timeout = timeout
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._client = httpx.AsyncClient(
            base_url=url.rstrip("/"),
            headers=headers,
            timeout=httpx.Timeout(timeout),
            follow_redirects=False,
            transport=transport,
            trust_env=False,
        )
        self._warnings = _Warnings(WARN_EVERY)

    @classmethod
    def from_settings(cls, settings: ServiceSettings) -> "TrackerClient | None":
        """The client of KUBEMTA_TRACKER_URL, or None when it is empty (no duplicate checks)."""
        if not settings.tracker_url:
            return None
        return cls(settings.tracker_url, settings.tracker_token.get_secret_value(), settings.tracker_timeout)

    async def first_queue_id(self, dedup_key: str, within: float) -> str | None:
        """The queue id of the message received within the last `within` seconds with this dedup key, "" when
        there is none (not a duplicate), None when unknown."""
        if not DEDUP_KEY.fullmatch(dedup_key) or within <= 0:
            DUPLICATE_CHECKS.labels(check="received", result="unknown").inc()
            return None
        path = f"/v1/duplicates/received/{dedup_key}"
        answer = await self._get("received", path, {"within": _seconds(within)}, absent_on_404=True)
        if answer is _UNKNOWN:
            return None
        if answer is _ABSENT:
            DUPLICATE_CHECKS.labels(check="received", result="absent").inc()
            return ""
        queue_id = answer.get("queue_id") if isinstance(answer, dict) else None
        if not isinstance(queue_id, str) or not queue_id or len(queue_id) > MAX_QUEUE_ID:
            self._unknown("received", f"a duplicate check answer without a queue id: {sanitize(str(answer)[:200])}")
            return None
        DUPLICATE_CHECKS.labels(check="received", result="found").inc()
        return queue_id

    async def delivered_recipients(self, job_id: str) -> list[events_pb2.RecipientOutcome] | None:
        """The recipients of `job_id` already recorded as delivered (an empty list: none), None when unknown."""
        if not job_id:
            DUPLICATE_CHECKS.labels(check="delivered", result="unknown").inc()
            return None
        answer = await self._get("delivered", f"/v1/duplicates/jobs/{_segment(job_id)}/delivered", {})
        if answer is _UNKNOWN:
            return None
        recipients = answer.get("recipients") if isinstance(answer, dict) else None  # a 404 too: unknown
        if not isinstance(recipients, list):
            self._unknown("delivered", "a delivered-recipients answer without a recipients list")
            return None
        outcomes: list[events_pb2.RecipientOutcome] = []
        for item in recipients:
            if not isinstance(item, dict):
                self._unknown("delivered", "a delivered-recipients answer with a recipient not an object")
                return None
            try:
                known = {name: value for name, value in item.items() if name in OUTCOME_FIELDS}  # newer fields: ignored
                outcomes.append(ParseDict(known, events_pb2.RecipientOutcome()))  # a bad value or enum name: an error
            except (ParseError, ValueError, TypeError, RecursionError) as exc:
                self._unknown("delivered", f"a delivered-recipients answer with a bad recipient: {sanitize(str(exc))}")
                return None
        DUPLICATE_CHECKS.labels(check="delivered", result="found" if outcomes else "absent").inc()
        return outcomes

    async def recorded(
        self, kind: str, *, queue_id: str = "", job_id: str = "", attempt: int | None = None
    ) -> bool | None:
        """Whether an event of `kind` (queued: for `queue_id`; routed, fate: for `job_id`, and `attempt` when
        given) is on the stream; None when unknown."""
        check = kind if kind in RECORDED_KINDS else "recorded"
        if kind not in RECORDED_KINDS or not (queue_id if kind == "queued" else job_id):
            logger.debug("not a duplicate check the tracker answers: kind=%s", sanitize(kind, 40))
            if check in RECORDED_KINDS:
                DUPLICATE_CHECKS.labels(check=check, result="unknown").inc()
            return None
        params = {"kind": kind}
        if queue_id:
            params["queue_id"] = queue_id
        if job_id:
            params["job_id"] = job_id
        if attempt is not None:
            params["attempt"] = str(attempt)
        answer = await self._get(check, "/v1/duplicates/recorded", params)
        if answer is _UNKNOWN:
            return None
        value = answer.get("recorded") if isinstance(answer, dict) else None
        if not isinstance(value, bool):
            self._unknown(check, "a recorded answer without a true/false 'recorded'")
            return None
        DUPLICATE_CHECKS.labels(check=check, result="found" if value else "absent").inc()
        return value

    async def claim_idempotency(self, key: str, fingerprint: str, claimant: str, window: float) -> IdempotencyAnswer:
        """Claim the Idempotency-Key `key` (hex SHA-256) for one request attempt `claimant`, counting what happened
        in the last `window` seconds; TrackerUnavailable when the tracker cannot answer (do not queue then)."""
        body = {"key": key, "fingerprint": fingerprint, "claimant": claimant, "window": window}
        answer = await self._post("/v1/idempotency/claims", body)
        state = answer.get("state") if isinstance(answer, dict) else None
        queue_id = answer.get("queue_id", "") if isinstance(answer, dict) else ""
        first = answer.get("fingerprint", "") if isinstance(answer, dict) else ""
        if not isinstance(first, str) or (first and not HEX64.fullmatch(first)):
            raise TrackerUnavailable("a claim answer with a bad fingerprint")
        if state == "claimed":
            return IdempotencyAnswer("claimed")
        if state == "in_progress":
            return IdempotencyAnswer("in_progress", fingerprint=first)
        if state == "done":
            if not isinstance(queue_id, str) or not queue_id or len(queue_id) > MAX_QUEUE_ID:
                raise TrackerUnavailable("a done claim answer without a queue id")
            return IdempotencyAnswer("done", queue_id=queue_id, fingerprint=first)
        raise TrackerUnavailable(f"a claim answer with no known state: {sanitize(str(answer)[:200])}")

    async def release_idempotency(self, key: str, claimant: str) -> None:
        """Release `claimant`'s claim of `key` (its request queued nothing); TrackerUnavailable when the tracker
        cannot confirm it (the claim then holds the key until it is stale: KUBEMTA_IDEMPOTENCY_CLAIM_TTL)."""
        answer = await self._post("/v1/idempotency/releases", {"key": key, "claimant": claimant})
        if not isinstance(answer, dict) or answer.get("state") != "released":
            raise TrackerUnavailable("a release answer that is not {state: released}")

    async def suppressed(self, addresses: Sequence[str], *, within: float) -> dict[str, SuppressionEntry] | None:
        """The live suppression entries among `addresses` (at most MAX_SUPPRESSION_CHECK), by the address as the
        tracker normalized it (lower-cased); None when the tracker did not answer within `within` seconds or answered
        something else than the API promises (logged at most every WARN_EVERY seconds)."""
        if not addresses:
            return {}
        body = {"addresses": list(addresses[:MAX_SUPPRESSION_CHECK])}
        try:
            answer = await self._request("POST", "/v1/suppressions/check", body=body, within=within)
            return suppression_entries(answer)
        except (_TrackerProblem, ValueError) as exc:
            self._warnings.warn(f"tracker suppression check unknown, accepting: {exc}")
            return None

    async def close(self) -> None:
        await self._client.aclose()

    async def _post(self, path: str, body: dict[str, Any]) -> Any:
        """The decoded JSON answer of a 200 to POST `body`, bounded by the timeout; TrackerUnavailable otherwise."""
        try:
            return await self._request("POST", path, body=body)
        except _TrackerProblem as exc:
            problem = str(exc)
        self._warnings.warn(f"tracker idempotency {path.rsplit('/', 1)[-1]} unknown: {problem}")
        raise TrackerUnavailable(problem)

    def _unknown(self, check: str, problem: str) -> None:
        DUPLICATE_CHECKS.labels(check=check, result="unknown").inc()
        self._warnings.warn(f"tracker duplicate check ({check}) unknown, going on: {problem}")

    async def _get(self, check: str, path: str, params: dict[str, str], *, absent_on_404: bool = False) -> Any:
        """The decoded JSON answer, `_ABSENT` for a 404 when that means "none", or `_UNKNOWN` (counted and
        logged)."""
        try:
            return await self._request("GET", path, params=params, absent_on_404=absent_on_404)
        except _TrackerProblem as exc:
            self._unknown(check, str(exc))
            return _UNKNOWN

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
        absent_on_404: bool = False,
        within: float | None = None,
    ) -> Any:
        """The decoded JSON answer of a 200 within the timeout (or `within` seconds when shorter), `_ABSENT` for a
        404 when `absent_on_404`; raises _TrackerProblem saying why there is none (no answer, another status, too
        long, not JSON)."""
        limit = self._timeout if within is None else min(within, self._timeout)
        try:
            async with asyncio.timeout(limit):
                async with self._client.stream(method, path, params=params, json=body) as response:
                    if absent_on_404 and response.status_code == 404:
                        return _ABSENT
                    if response.status_code != 200:
                        raise _TrackerProblem(f"HTTP {response.status_code}")
                    raw = await _read_capped(response)
        except TimeoutError:
            raise _TrackerProblem(f"no answer within {limit:g}s") from None
        except httpx.HTTPError as exc:
            raise _TrackerProblem(f"{type(exc).__name__}: {sanitize(str(exc))}") from None
        try:
            return json.loads(raw)
        except (ValueError, RecursionError):
            raise _TrackerProblem("an answer that is not JSON") from None


_ABSENT: Any = object()
"""`_get`'s answer for a 404 that means "no such record"."""
_UNKNOWN: Any = object()
"""`_get`'s answer when the tracker could not tell (already counted and logged)."""


async def _read_capped(response: httpx.Response) -> bytes:
    """The body, at most MAX_BODY bytes (more: a problem, not read further)."""
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY:
        raise _TrackerProblem(f"an answer of {declared} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > MAX_BODY:
            raise _TrackerProblem(f"an answer over {MAX_BODY} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
