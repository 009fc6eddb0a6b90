"""Bounds on what a client may send an HTTP API: a request body's size and the time it takes to arrive.

Used by the tracker API (KUBEMTA_TRACKER_MAX_BODY) and the ingress' sending API
(KUBEMTA_API_MAX_REQUEST_SIZE); each counts the refusals in its own metric (`refused`).

uvicorn has neither. Its h11 protocol bounds a request's header block (`h11_max_incomplete_event_size`,
16 KiB by default: larger headers are a 400) and closes idle keep-alive connections
(`timeout_keep_alive`, 5 s), but it reads a body of any size and waits for it as long as the client
likes (and waits as long for the headers of a connection's first request: that is left to the
NetworkPolicy).

`BodyLimit` is the outermost middleware of an API app, so it runs before routing and before
authentication, the same for every path and every caller:
- a `Content-Length` over the limit is answered 413 right away, without reading the body (and,
  for `Expect: 100-continue`, without inviting it);
- any other body (chunked, or within its declared length) is read in full before the app sees
  the request, counted as it arrives: past the limit, 413; not complete within the timeout, 408;
- a request without a body (no Content-Length or 0, no Transfer-Encoding) goes to the app as it is.
  The app then gets the body from memory (at most the limit per request).
Both answers close the connection (the rest of the body is not read) and say only what was
wrong with the request: nothing of the route, the token or the data behind it. uvicorn closes at once (no
lingering close), so a client still sending at that moment may see the connection reset rather
than read the answer; either way it is cut off.
"""

import asyncio
import json
from typing import Protocol

from starlette.types import ASGIApp, Message, Receive, Scope, Send

RETRY_AFTER = 5
"""Seconds a client refused for want of memory (503) is asked to wait."""


class Budget(Protocol):
    """Bytes the process may hold for requests at once (the ingress' DataBudget, shared with its SMTP sessions)."""

    def reserve(self, size: int) -> bool:
        """Take `size` bytes if they fit; False (nothing taken) otherwise."""
        ...

    def release(self, size: int) -> None:
        """Give back `size` bytes taken with `reserve`."""
        ...


class _TooLarge(Exception):
    pass


class _NoRoom(Exception):
    pass


class BodyLimit:
    """ASGI middleware: request bodies of at most `max_body` bytes, complete within `timeout` seconds, and (with a
    `budget`) held only while the budget has room: each chunk is reserved as it arrives and the whole body given
    back once the app answered; a body that does not fit is answered 503 with Retry-After (the SMTP sessions'
    `452 4.3.1` in HTTP)."""

    def __init__(self, app: ASGIApp, *, max_body: int, timeout: float, budget: Budget | None = None) -> None:
        self.app = app
        self.max_body = max_body
        self.timeout = timeout
        self.budget = budget

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared == 0 or (declared is None and not _chunked(scope)):
            # no body (RFC 9112 §6.3: neither Content-Length nor Transfer-Encoding is a body of length 0)
            await self.app(scope, receive, send)
            return
        if declared is not None and declared > self.max_body:
            await self._refuse(send, 413, "too_large", f"the request body is larger than {self.max_body} bytes")
            return
        held = [0]  # bytes reserved from the budget for this body
        try:
            try:
                async with asyncio.timeout(self.timeout):
                    body = await self._read(receive, held)
            except _TooLarge:
                await self._refuse(send, 413, "too_large", f"the request body is larger than {self.max_body} bytes")
                return
            except TimeoutError:
                await self._refuse(send, 408, "too_slow", f"the request body did not arrive within {self.timeout:g} s")
                return
            except _NoRoom:
                detail = "insufficient storage for the request body now: retry later"
                await self._refuse(send, 503, "no_room", detail, retry_after=RETRY_AFTER)
                return
            if body is None:
                return  # the client went away: nobody to answer
            await self._answer(scope, receive, send, body)
        finally:
            if self.budget is not None and held[0]:
                self.budget.release(held[0])

    async def _answer(self, scope: Scope, receive: Receive, send: Send, body: bytes) -> None:
        """Let the app answer the request, its body replayed from memory."""
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _read(self, receive: Receive, held: list[int]) -> bytes | None:
        """The whole body; None when the client disconnected first; _TooLarge past the limit, _NoRoom when the
        budget cannot hold the next chunk (`held[0]`: what is reserved so far)."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                raise _TooLarge
            if self.budget is not None and chunk:
                if not self.budget.reserve(len(chunk)):
                    raise _NoRoom
                held[0] += len(chunk)
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    def refused(self, reason: str) -> None:
        """Count a refused request (`too_large`, `too_slow` or `no_room`); subclasses name their metric."""

    async def _refuse(
        self, send: Send, status: int, reason: str, detail: str, *, retry_after: int | None = None
    ) -> None:
        self.refused(reason)
        body = json.dumps({"detail": detail}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        if retry_after is not None:
            headers.append((b"retry-after", str(retry_after).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})


def _content_length(scope: Scope) -> int | None:
    """The declared Content-Length (uvicorn has refused a malformed one already); None when there is none."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _chunked(scope: Scope) -> bool:
    """Whether the request has a Transfer-Encoding (in HTTP/1.1, chunked: h11 refuses any other)."""
    return any(name == b"transfer-encoding" for name, _ in scope["headers"])
