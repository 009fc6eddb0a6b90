"""SMTP AUTH (RFC 4954) against the users file or a ServiceAccount token, with brute-force resistance, off the loop.

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

The two tables are separate and bounded (auth_limits.py): usernames are counted only
when they exist in the users file (an unknown name has no account to protect, so that
table is bounded by the file and rotating made-up names cannot grow it), and the client
table keeps at most `auth_max_tracked_clients` entries; when it is full, aged-out then
unlocked entries are forgotten before any lockout. Only an attacker with more addresses
than that bound within one window can shorten lockouts (the soonest-ending go first, and
the users' own lockouts still hold).

aiosmtpd calls the authenticator synchronously, so the password is not checked there:
the callback decodes, refuses a locked client or user at once, and hands a `PendingCheck`
to `AuthMechanisms` (which the SMTP handler inherits: aiosmtpd prefers a handler's
`auth_<MECHANISM>` methods to its own). `finish_auth` then waits its turn for the keys
involved (checks in flight count as possible failures, so parallel connections cannot
overshoot the limit), runs the scrypt check on a worker thread (verify_pool.py; about
50 ms at the default `ln=14`, so the event loop and every other session go on meanwhile),
records the outcome even when the client has gone meanwhile, and delays, refuses or
accepts. At most `auth_verify_threads` checks run and `auth_verify_queue` wait; beyond
that AUTH gets `454 4.7.0` (RFC 4954 section 6) and counts as no failure. Unknown users
are checked against a dummy hash, so they take as long as known ones. Passwords are never
logged; usernames are logged sanitised, with the client address.

Kubernetes ServiceAccounts (with a `ServiceAccountVerifier`, serviceaccounts.py) log in with
AUTH PLAIN: the username names the account, `NAMESPACE/NAME` or
`system:serviceaccount:NAMESPACE:NAME`, and the password is its projected token. Such a
username cannot be a users file name (those hold no `/` or `:`), so it always goes to the
verifier (TokenReview, cached); a token that is not JWT-shaped, not genuine, of another
account than the one named, or of an account the identities file does not list gets `535`,
counted as any failed password (the account counts as a username when the identities file
lists it). When the TokenReview API cannot answer, AUTH gets `454 4.7.0` and counts as no
failure. Success leaves `AuthenticatedUser("system:serviceaccount:NS:NAME", identities)`.
"""

import asyncio
import ipaddress
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from kubemta_common.logs import sanitize
from kubemta_common.metrics import preinitialise
from kubemta_ingress import metrics
from kubemta_ingress.auth_limits import Admission, FailureLimiter
from kubemta_ingress.policy import IPAddress, client_ip
from kubemta_ingress.rejections import Reason, record_rejection
from kubemta_ingress.sender_identity import AuthenticatedUser
from kubemta_ingress.serviceaccount_identities import ServiceAccount
from kubemta_ingress.serviceaccounts import Outcome, ServiceAccountVerifier
from kubemta_ingress.settings import IngressSettings
from kubemta_ingress.users import User, UsersFile, hash_password, verify_password
from kubemta_ingress.verify_pool import VerifyPool, VerifyPoolFull

logger = logging.getLogger(__name__)

type Authenticator = Callable[[SMTP, Session, Envelope, str, object], AuthResult]

AUTH_OK = "235 2.7.0 Authentication successful"  # RFC 4954 section 6
AUTH_FAILED = "535 5.7.8 Authentication credentials invalid"  # RFC 4954 section 6
AUTH_BUSY = "454 4.7.0 Temporary authentication failure"  # RFC 4954 section 6: too many checks at once
AUTH_UNAVAILABLE = "454 4.7.0 Temporary authentication failure: the token cannot be verified now"  # RFC 4954 §6
AUTH_LOCKED = "421 4.7.0 Too many failed authentication attempts"  # RFC 5321 section 3.8: 421 closes
AUTH_IN_TRANSACTION = "503 5.5.1 Error: MAIL transaction in progress"  # RFC 4954 section 4
MAX_FAILURE_DELAY = 10.0  # seconds: a client waits at most this long for one 535
DEFAULT_VERIFY_THREADS = 2  # the settings' defaults (settings.py), for authenticators built in code
DEFAULT_VERIFY_QUEUE = 32
DEFAULT_MAX_TRACKED_CLIENTS = 50_000
IPV6_VERSION = 6
IPV6_PREFIX = 64  # RFC 6177: a site usually gets a /56 or /48, one LAN a /64

preinitialise(metrics.AUTH_ATTEMPTS, result=["busy"])  # 454: the verification pool was full
preinitialise(metrics.AUTH_ATTEMPTS, result=["unavailable"])  # 454: the TokenReview API did not answer


@dataclass(frozen=True, slots=True)
class AuthRefusal:
    """Carried in a failed `AuthResult.auth_data`: how `AuthMechanisms` must answer."""

    delay: float
    close: bool


@dataclass(frozen=True, slots=True)
class PendingCheck:
    """Carried in `AuthResult.auth_data` by the callback: the password check `finish_auth` runs off the loop.

    The result it travels in is a failure, so a path that never runs the check refuses.
    """

    authenticator: "UsersAuthenticator"
    name: str
    password: bytes = field(repr=False)
    user: User | None
    client: str
    ip_key: str
    mechanism: str
    helo: str | None
    account: ServiceAccount | None = None
    """The ServiceAccount the username names: the password is its token (None: a users file login)."""
    listed: bool = False
    """The account is in the ServiceAccount identities file (so its failures are counted)."""

    @property
    def username_key(self) -> str | None:
        """The key of the username limiter, None when this username is not counted (no such user or account)."""
        if self.account is not None:
            return self.account.username if self.listed else None
        return self.name if self.user is not None else None


class UsersAuthenticator:
    """aiosmtpd `authenticator` callback: credentials against the users file or a ServiceAccount token, with the
    failure limiters."""

    def __init__(
        self,
        users: UsersFile | None,
        *,
        failure_limit: int,
        failure_window: float,
        failure_delay: float,
        verify_threads: int = DEFAULT_VERIFY_THREADS,
        verify_queue: int = DEFAULT_VERIFY_QUEUE,
        max_tracked_clients: int = DEFAULT_MAX_TRACKED_CLIENTS,
        clock: Callable[[], float] = time.monotonic,
        serviceaccounts: ServiceAccountVerifier | None = None,
    ) -> None:
        self._users = users
        self._serviceaccounts = serviceaccounts
        self.clients = FailureLimiter(
            limit=failure_limit, window=failure_window, max_keys=max_tracked_clients, name="client IPs", clock=clock
        )
        # Only users of the file are counted, so this table is as large as the file at most.
        self.usernames = FailureLimiter(
            limit=failure_limit, window=failure_window, max_keys=max_tracked_clients, name="usernames", clock=clock
        )
        self._admission = Admission()
        self._pool = VerifyPool(threads=verify_threads, queue=verify_queue)
        self._checks: set[asyncio.Task[AuthResult]] = set()
        self._failure_delay = failure_delay
        # Unknown users are checked against this hash, so they take as long as known ones.
        self._dummy_hash = hash_password("not a password")

    @property
    def pending_checks(self) -> int:
        """Password checks running or waiting for a thread."""
        return self._pool.pending

    def __call__(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: object
    ) -> AuthResult:
        client = client_ip(session.peer)
        client_text = str(client) if client is not None else "unknown"
        if not isinstance(auth_data, LoginPassword):
            return self._fail(client_text, session.host_name, "", mechanism)
        name = auth_data.login.decode("utf-8", "replace")
        account = ServiceAccount.from_login(name) if self._serviceaccounts is not None else None
        listed = account is not None and self._serviceaccounts is not None and self._serviceaccounts.listed(account)
        user = self._users.get(name) if self._users is not None and account is None else None
        ip_key = client_key(client)
        pending = PendingCheck(
            self, name, auth_data.password, user, client_text, ip_key, mechanism, session.host_name, account, listed
        )
        username_key = pending.username_key
        if self.clients.locked(ip_key) or (username_key is not None and self.usernames.locked(username_key)):
            return self._locked(client_text, session.host_name, name)
        return AuthResult(success=False, handled=False, message=AUTH_FAILED, auth_data=pending)

    async def check(self, pending: PendingCheck) -> AuthResult:
        """Verify the password off the event loop and record the outcome; the result `finish_auth` acts on."""
        keys = [(self.clients, pending.ip_key)]
        if pending.username_key is not None:
            keys.append((self.usernames, pending.username_key))
        if not await self._admission.enter(keys):
            return self._locked(pending.client, pending.helo, pending.name)
        task = asyncio.create_task(self._verify(pending, keys))
        self._checks.add(task)  # the outcome is recorded even if the session is cancelled meanwhile
        task.add_done_callback(self._checks.discard)
        return await asyncio.shield(task)

    async def _verify(self, pending: PendingCheck, keys: list[tuple[FailureLimiter, str]]) -> AuthResult:
        user = pending.user
        try:
            if pending.account is not None:
                return await self._verify_token(pending, pending.account)
            stored = user.password_hash if user is not None else self._dummy_hash
            try:
                valid = await self._pool.run(verify_password, pending.password, stored)
            except VerifyPoolFull:
                metrics.AUTH_ATTEMPTS.labels(result="busy").inc()
                logger.info(
                    "AUTH refused: too many password checks at once",
                    extra={"client": pending.client, "reply": AUTH_BUSY},
                )
                return AuthResult(success=False, handled=False, message=AUTH_BUSY)
            if user is not None and valid:
                self.usernames.clear(pending.name)
                metrics.AUTH_ATTEMPTS.labels(result="success").inc()
                logger.info(
                    "authenticated",
                    extra={
                        "client": pending.client,
                        "username": sanitize(pending.name),
                        "mechanism": pending.mechanism,
                    },
                )
                return AuthResult(success=True, auth_data=AuthenticatedUser(user.name, user.identities))
            return self._record_failure(pending)
        finally:
            self._admission.leave(keys)

    async def _verify_token(self, pending: PendingCheck, account: ServiceAccount) -> AuthResult:
        """The password as `account`'s ServiceAccount token (TokenReview, cached); the AUTH result."""
        assert self._serviceaccounts is not None
        check = await self._serviceaccounts.check(pending.password.decode("ascii", "replace"))
        if check.outcome is Outcome.UNAVAILABLE:
            metrics.AUTH_ATTEMPTS.labels(result="unavailable").inc()
            logger.warning(
                "AUTH refused for now: the ServiceAccount token cannot be verified",
                extra={"client": pending.client, "username": sanitize(pending.name), "reply": AUTH_UNAVAILABLE},
            )
            return AuthResult(success=False, handled=False, message=AUTH_UNAVAILABLE)
        principal = check.principal
        if principal is None or principal.name != account.username:
            return self._record_failure(pending)
        self.usernames.clear(account.username)
        metrics.AUTH_ATTEMPTS.labels(result="success").inc()
        logger.info(
            "authenticated",
            extra={"client": pending.client, "username": principal.name, "mechanism": pending.mechanism},
        )
        return AuthResult(success=True, auth_data=AuthenticatedUser(principal.name, principal.identities))

    def _record_failure(self, pending: PendingCheck) -> AuthResult:
        failures = self.clients.record(pending.ip_key)
        username_key = pending.username_key
        if username_key is not None:
            failures = max(failures, self.usernames.record(username_key))
        return self._fail(pending.client, pending.helo, pending.name, pending.mechanism, failures)

    def _locked(self, client: str, helo: str | None, name: str) -> AuthResult:
        metrics.AUTH_ATTEMPTS.labels(result="locked").inc()
        record_rejection(Reason.AUTH_LOCKED, AUTH_LOCKED, client=client, helo=helo, username=name)
        return AuthResult(success=False, handled=False, message=AUTH_LOCKED, auth_data=AuthRefusal(0.0, True))

    def _fail(self, client: str, helo: str | None, name: str, mechanism: str, failures: int = 1) -> AuthResult:
        metrics.AUTH_ATTEMPTS.labels(result="failure").inc()
        record_rejection(
            Reason.AUTH_FAILED,
            AUTH_FAILED,
            client=client,
            helo=helo,
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


def build_authenticator(
    settings: IngressSettings, serviceaccounts: ServiceAccountVerifier | None = None
) -> Authenticator | None:
    """The AUTH callback for aiosmtpd, or None when neither `KUBEMTA_USERS_FILE` nor `serviceaccounts` is there.

    Raises ConfigError when the users file is missing or malformed at start.
    """
    if settings.users_file is None and serviceaccounts is None:
        return None
    return UsersAuthenticator(
        UsersFile(settings.users_file) if settings.users_file is not None else None,
        failure_limit=settings.auth_failure_limit,
        failure_window=settings.auth_failure_window,
        failure_delay=settings.auth_failure_delay,
        verify_threads=settings.auth_verify_threads,
        verify_queue=settings.auth_verify_queue,
        max_tracked_clients=settings.auth_max_tracked_clients,
        serviceaccounts=serviceaccounts,
    )


async def finish_auth(server: SMTP, result: AuthResult) -> AuthResult:
    """Act on an authenticator's result: check a pending password, delay a failure, close after a refusal."""
    session = server.session
    assert session is not None
    if not result.success and isinstance(result.auth_data, PendingCheck):
        result = await result.auth_data.authenticator.check(result.auth_data)
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
