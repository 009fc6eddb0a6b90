"""SMTP AUTH (RFC 4954) against the users file, with brute-force resistance.

`build_authenticator` gives aiosmtpd its `authenticator` callback: aiosmtpd's
PLAIN (RFC 4616) and LOGIN mechanisms decode the credentials into a
`LoginPassword` and call it; it returns an `AuthResult`. On success the session's
`auth_data` is an `AuthenticatedUser` (name and sender identities, no secret).

Brute force is slowed, then refused, per client IP (IPv6: per /64) and per username: within
`auth_failure_window`, the n-th failure is answered `535 5.7.8` only after
`auth_failure_delay` × n seconds (at most `MAX_FAILURE_DELAY`); once either key
reached `auth_failure_limit` failures, further attempts get `421 4.7.0` and the
connection is closed, until the failures age out of the window. A success clears
the username's failures (the owner proved itself) but not the IP's. The
per-username refusal also stops the right password, so an attacker can lock a
user out for one window: the price of stopping a distributed guesser (Dovecot's
auth penalty and fail2ban make the same trade).

aiosmtpd calls the authenticator synchronously, so the delay and the disconnect
happen in `AuthMechanisms`, which the SMTP handler inherits: aiosmtpd prefers a
handler's `auth_<MECHANISM>` methods to its own, and these call aiosmtpd's own
mechanism (to decode the credentials) and then act on what the authenticator
returned. The password is verified on the event loop (scrypt with the file's
cost, about 50 ms at the default `ln=14`); the limiter bounds how often one client
can make the ingress do that. Passwords are never logged; usernames are logged
sanitised, with the client address.
"""

import asyncio
import collections
import ipaddress
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from kubemta_common.logs import sanitize
from kubemta_ingress import metrics
from kubemta_ingress.policy import IPAddress, client_ip
from kubemta_ingress.rejections import Reason, record_rejection
from kubemta_ingress.sender_identity import AuthenticatedUser
from kubemta_ingress.settings import IngressSettings
from kubemta_ingress.users import UsersFile, hash_password, verify_password

logger = logging.getLogger(__name__)

type Authenticator = Callable[[SMTP, Session, Envelope, str, object], AuthResult]

AUTH_OK = "235 2.7.0 Authentication successful"  # RFC 4954 section 6
AUTH_FAILED = "535 5.7.8 Authentication credentials invalid"  # RFC 4954 section 6
AUTH_LOCKED = "421 4.7.0 Too many failed authentication attempts"  # RFC 5321 section 3.8: 421 closes
AUTH_IN_TRANSACTION = "503 5.5.1 Error: MAIL transaction in progress"  # RFC 4954 section 4
MAX_FAILURE_DELAY = 10.0  # seconds: a client waits at most this long for one 535
MAX_TRACKED_KEYS = 100_000  # client IPs and usernames remembered at once (memory bound)
IPV6_VERSION = 6
IPV6_PREFIX = 64  # RFC 6177: a site usually gets a /56 or /48, one LAN a /64


@dataclass(frozen=True, slots=True)
class AuthRefusal:
    """Carried in a failed `AuthResult.auth_data`: how `AuthMechanisms` must answer."""

    delay: float
    close: bool


class FailureLimiter:
    """Failures per key (client IP or username) within a sliding window."""

    def __init__(self, *, limit: int, window: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._limit = limit
        self._window = window
        self._clock = clock
        self._failures: dict[str, collections.deque[float]] = {}

    def count(self, key: str) -> int:
        """Failures of `key` within the window."""
        times = self._failures.get(key)
        if times is None:
            return 0
        horizon = self._clock() - self._window
        while times and times[0] <= horizon:
            times.popleft()
        if not times:
            del self._failures[key]
            return 0
        return len(times)

    def locked(self, key: str) -> bool:
        """True when `key` reached the limit within the window."""
        return self.count(key) >= self._limit

    def record(self, key: str) -> int:
        """Count one failure of `key`; the number of failures within the window, this one included."""
        count = self.count(key)
        if key not in self._failures and len(self._failures) >= MAX_TRACKED_KEYS:
            self._forget_expired()
        self._failures.setdefault(key, collections.deque()).append(self._clock())
        return count + 1

    def clear(self, key: str) -> None:
        """Forget the failures of `key`."""
        self._failures.pop(key, None)

    def _forget_expired(self) -> None:
        for key in list(self._failures):
            self.count(key)
        while len(self._failures) >= MAX_TRACKED_KEYS:  # still full: drop the oldest keys
            del self._failures[next(iter(self._failures))]


class UsersAuthenticator:
    """aiosmtpd `authenticator` callback: credentials against the users file, with the failure limiter."""

    def __init__(
        self,
        users: UsersFile,
        *,
        failure_limit: int,
        failure_window: float,
        failure_delay: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._users = users
        self._limiter = FailureLimiter(limit=failure_limit, window=failure_window, clock=clock)
        self._failure_delay = failure_delay
        # Unknown users are checked against this hash, so they take as long as known ones.
        self._dummy_hash = hash_password("not a password")

    def __call__(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: object
    ) -> AuthResult:
        client = client_ip(session.peer)
        client_text = str(client) if client is not None else "unknown"
        if not isinstance(auth_data, LoginPassword):
            return self._fail(session, client_text, "", mechanism)
        name = auth_data.login.decode("utf-8", "replace")
        ip_key, user_key = f"ip:{client_key(client)}", f"user:{name}"
        if self._limiter.locked(ip_key) or self._limiter.locked(user_key):
            metrics.AUTH_ATTEMPTS.labels(result="locked").inc()
            record_rejection(Reason.AUTH_LOCKED, AUTH_LOCKED, client=client_text, helo=session.host_name, username=name)
            return AuthResult(success=False, handled=False, message=AUTH_LOCKED, auth_data=AuthRefusal(0.0, True))
        user = self._users.get(name)
        valid = verify_password(auth_data.password, user.password_hash if user is not None else self._dummy_hash)
        if user is not None and valid:
            self._limiter.clear(user_key)
            metrics.AUTH_ATTEMPTS.labels(result="success").inc()
            logger.info(
                "authenticated",
                extra={"queue_id": None, "client": client_text, "username": sanitize(name), "mechanism": mechanism},
            )
            return AuthResult(success=True, auth_data=AuthenticatedUser(user.name, user.identities))
        failures = max(self._limiter.record(ip_key), self._limiter.record(user_key))
        return self._fail(session, client_text, name, mechanism, failures)

    def _fail(self, session: Session, client: str, name: str, mechanism: str, failures: int = 1) -> AuthResult:
        metrics.AUTH_ATTEMPTS.labels(result="failure").inc()
        record_rejection(
            Reason.AUTH_FAILED,
            AUTH_FAILED,
            client=client,
            helo=session.host_name,
            username=name,
            mechanism=mechanism,
            failures=failures,
        )
        delay = min(self._failure_delay * failures, MAX_FAILURE_DELAY)
        return AuthResult(success=False, handled=False, message=AUTH_FAILED, auth_data=AuthRefusal(delay, False))


def client_key(client: IPAddress | None) -> str:
    """The limiter key of a client: its IPv4 address, or its IPv6 /64 (one subscriber's usual allocation)."""
    if client is None:
        return "unknown"
    if client.version == IPV6_VERSION:
        return str(ipaddress.ip_network(f"{client}/{IPV6_PREFIX}", strict=False))
    return str(client)


def build_authenticator(settings: IngressSettings) -> Authenticator | None:
    """The AUTH callback for aiosmtpd, or None when `KUBEMTA_USERS_FILE` is not set.

    Raises ConfigError when the users file is missing or malformed at start.
    """
    if settings.users_file is None:
        return None
    return UsersAuthenticator(
        UsersFile(settings.users_file),
        failure_limit=settings.auth_failure_limit,
        failure_window=settings.auth_failure_window,
        failure_delay=settings.auth_failure_delay,
    )


async def finish_auth(server: SMTP, result: AuthResult) -> AuthResult:
    """Act on an authenticator's result: delay a failure, close after a refusal, record a success."""
    session = server.session
    assert session is not None
    refusal = result.auth_data if not result.success else None
    if isinstance(refusal, AuthRefusal):
        if refusal.delay > 0:
            await asyncio.sleep(refusal.delay)
        if refusal.close:
            await server.push(result.message or AUTH_LOCKED)
            if server.transport is not None:
                server.transport.close()
            return AuthResult(success=False, handled=True)
        return AuthResult(success=False, handled=False, message=result.message)
    if result.success:
        # Set what aiosmtpd's smtp_AUTH would, without its deprecated `login_data` (which logs a warning).
        session.authenticated = True
        session.auth_data = result.auth_data
        await server.push(result.message or AUTH_OK)
        return AuthResult(success=False, handled=True)
    return result


async def refused_in_transaction(server: SMTP) -> bool:
    """Refuse AUTH inside a mail transaction (RFC 4954 section 4); True when refused."""
    if server.envelope is not None and server.envelope.mail_from:
        await server.push(AUTH_IN_TRANSACTION)
        return True
    return False


class AuthMechanisms:
    """AUTH PLAIN and LOGIN for an aiosmtpd handler: aiosmtpd's decoding, then `finish_auth`."""

    async def auth_PLAIN(self, server: SMTP, args: list[str]) -> AuthResult:
        """RFC 4616 PLAIN, with or without an initial response."""
        if await refused_in_transaction(server):
            return AuthResult(success=False, handled=True)
        return await finish_auth(server, await server.auth_PLAIN(None, args))

    async def auth_LOGIN(self, server: SMTP, args: list[str]) -> AuthResult:
        """The LOGIN mechanism (draft-murchison-sasl-login), username and password challenges."""
        if await refused_in_transaction(server):
            return AuthResult(success=False, handled=True)
        return await finish_auth(server, await server.auth_LOGIN(None, args))
