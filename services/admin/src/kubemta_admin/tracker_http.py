"""The tracker's HTTP API as the command line sees it: one bounded request, one JSON answer or one `CliError`.

Nothing the tracker answers is trusted: the body is read up to `MAX_BODY` bytes, must be a JSON object, and every
failure becomes a `CliError` with the command's exit status (1 not found, 2 usage, 3 unreachable or a bad answer,
4 authentication refused) and a one-line message in which the server's text is escaped and cut short. The token
goes only into the Authorization header: it is never part of a message, even when it is malformed.
"""

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import httpx

from kubemta_admin.text import printable, shorten

EXIT_OK, EXIT_NOT_FOUND, EXIT_USAGE, EXIT_UNAVAILABLE, EXIT_AUTH = 0, 1, 2, 3, 4
MAX_BODY = 32 * 1024 * 1024  # bytes of one answer; a tracker's largest honest answer (1000 messages) is far below
DETAIL_LIMIT = 200  # characters of a server's error detail shown


class CliError(Exception):
    """A failure the command reports in one line on stderr and exits with `status`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Target:
    """Where the tracker is and how to authenticate (the token is kept out of repr)."""

    url: str
    token: str
    timeout: float

    def __repr__(self) -> str:
        return f"Target(url={self.url!r}, token=<hidden>, timeout={self.timeout!r})"


def check_target(url: str, token: str, timeout: float) -> Target:
    """A validated Target; a bad URL, token or timeout is a usage error (the token itself is never quoted)."""
    try:
        parts = urlsplit(url)
        valid = parts.scheme in ("http", "https") and bool(parts.hostname) and (parts.port or 1) > 0
    except ValueError:  # a bad IPv6 literal or port
        valid = False
    if not valid or not url.isprintable():
        raise CliError(EXIT_USAGE, f"--url must be an http:// or https:// URL, not {printable(shorten(url, 100))}")
    if not token:
        raise CliError(EXIT_USAGE, "no token: give --token or set KUBEMTA_ADMIN_TOKEN")
    if not all(0x21 <= ord(char) <= 0x7E for char in token):
        raise CliError(EXIT_USAGE, "the token holds characters a bearer token cannot (spaces, controls, non-ASCII)")
    if not timeout > 0:
        raise CliError(EXIT_USAGE, "--timeout must be more than 0 seconds")
    return Target(url=url.rstrip("/"), token=token, timeout=timeout)


def shown_url(url: str) -> str:
    """The URL for messages: without user information, escaped."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    return printable(urlunsplit((parts.scheme, netloc, parts.path, "", "")))


def path_segment(value: str, what: str) -> str:
    """`value` quoted as one path segment; empty, "." and ".." are usage errors (they would change the path)."""
    if value in ("", ".", ".."):
        raise CliError(EXIT_USAGE, f"invalid {what}: {printable(value)!s}")
    return quote(value, safe="")


class TrackerHttp:
    """A synchronous client of the tracker API for one command run."""

    def __init__(self, target: Target, transport: httpx.BaseTransport | None = None) -> None:
        self._target = target
        self._client = httpx.Client(
            base_url=target.url,
            headers={"Authorization": f"Bearer {target.token}", "Accept": "application/json"},
            timeout=target.timeout,
            follow_redirects=False,  # a redirect could carry the token elsewhere
            transport=transport,
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> "TrackerHttp":
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def get(self, path: str, params: dict[str, str] | None = None) -> dict[str, Any]:
        return self._request("GET", path, params=params)

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._request("POST", path, body=body)

    def delete(self, path: str) -> dict[str, Any]:
        return self._request("DELETE", path)

    def _request(
        self, method: str, path: str, *, params: dict[str, str] | None = None, body: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        where = shown_url(self._target.url)
        try:
            with self._client.stream(method, path, params=params, json=body) as response:
                raw = _read_bounded(response)
                status = response.status_code
        except httpx.TimeoutException:
            raise CliError(
                EXIT_UNAVAILABLE, f"tracker at {where} did not answer within {self._target.timeout:g}s"
            ) from None
        except (httpx.HTTPError, OSError) as exc:
            raise CliError(EXIT_UNAVAILABLE, f"tracker at {where} unreachable: {type(exc).__name__}") from None
        if status >= 300 or status < 200:
            raise _status_error(status, raw, where)
        try:
            answer = json.loads(raw)
        except (ValueError, RecursionError):
            raise CliError(
                EXIT_UNAVAILABLE, f"tracker at {where} answered {status} with a body that is not JSON"
            ) from None
        if not isinstance(answer, dict):
            raise CliError(EXIT_UNAVAILABLE, f"tracker at {where} answered {status} with JSON that is not an object")
        return answer


def _read_bounded(response: httpx.Response) -> bytes:
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY:
        raise CliError(EXIT_UNAVAILABLE, f"the tracker's answer is larger than {MAX_BODY} bytes")
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > MAX_BODY:
            raise CliError(EXIT_UNAVAILABLE, f"the tracker's answer is larger than {MAX_BODY} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _detail(raw: bytes) -> str:
    """The `detail` of an error body, escaped and short; empty when there is none."""
    try:
        answer = json.loads(raw)
    except (ValueError, RecursionError):
        return ""
    detail = answer.get("detail") if isinstance(answer, dict) else None
    if detail is None:
        return ""
    text = detail if isinstance(detail, str) else json.dumps(detail, ensure_ascii=True)
    return ": " + printable(shorten(text, DETAIL_LIMIT))


def _status_error(status: int, raw: bytes, where: str) -> CliError:
    detail = _detail(raw)
    if status == 401:
        return CliError(EXIT_AUTH, f"tracker refused the token (401){detail}")
    if status == 403:
        return CliError(EXIT_AUTH, f"the token may not do this: an admin token is needed (403){detail}")
    if status == 404:
        return CliError(EXIT_NOT_FOUND, f"not found (404){detail}")
    if 400 <= status < 500:
        return CliError(EXIT_USAGE, f"tracker refused the request ({status}){detail}")
    return CliError(EXIT_UNAVAILABLE, f"tracker at {where} answered {status}{detail}")
