"""One host of a route tried for a job: a session (connection.py) carrying one mail transaction
(mail_transaction.py), in the transport's dialect (dialect.py: SMTP or LMTP).

`attempt_host` runs the transaction on a cached connection to the same host, reset with
RSET first (RFC 5321 §4.1.1.5), or on a new one; afterwards a connection in a clean
state goes back to the idle cache (pool.py; SMTP only, LMTP gets no pool), any other
says QUIT and closes. A cached connection that turns out dead is dropped and a new one
made, without failing the job.

The outcome is a final result for each recipient the host answered, and, for the
recipients it did not answer (connection refused, timed out or lost, MAIL FROM 4xx),
a `HostFailure` telling the deliverer to try the next host. A connection lost after
the final dot was sent is the one case where a recipient is neither delivered nor
retried elsewhere now (mail_transaction.py).

Cancellation (the drain deadline) closes the connection wherever it happens; it is
never given back to the cache, and no result leaves this module.
"""

import logging

from aiosmtplib import SMTPException, SMTPTimeoutError

from kubemta.v1 import message_pb2
from kubemta_delivery_worker.connection import (
    HostFailed,
    HostFailure,
    SmtpConnection,
    TlsFailed,
    host_port,
)
from kubemta_delivery_worker.dialect import SMTP_DIALECT, Dialect
from kubemta_delivery_worker.mail_transaction import HostAttempt, MailTransaction
from kubemta_delivery_worker.metrics import SMTP_CONNECTIONS_REUSED
from kubemta_delivery_worker.pool import ConnectionKey, ConnectionPool
from kubemta_delivery_worker.relay_auth import needs_auth, session_route
from kubemta_delivery_worker.smtp_options import SmtpOptions

# The session types callers of attempt_host use, at home in connection.py and mail_transaction.py.
__all__ = ["HostAttempt", "HostFailure", "SmtpConnection", "SmtpOptions", "attempt_host", "connection_key"]

logger = logging.getLogger(__name__)


def connection_key(
    host: message_pb2.RouteHost, job: message_pb2.DeliveryJob, options: SmtpOptions | None = None
) -> ConnectionKey:
    """The idle-cache key of a session with `host` for `job`: address, port, the TLS policy the session
    uses (relay_auth.session_route: verify before AUTH), the name a verified or authenticated session's
    certificate was presented for, and the user name it authenticates as."""
    credentials = options.relay_credentials if options is not None else None
    route = session_route(job.route, host, credentials)
    authenticates = credentials is not None and needs_auth(route, credentials)
    named = authenticates or route.tls_policy == message_pb2.TLS_POLICY_VERIFY
    return ConnectionKey(
        address=host.address,
        port=host_port(host),
        tls_policy=int(route.tls_policy),
        server_name=host.hostname.rstrip(".").lower() if named else "",
        identity=credentials.username if credentials is not None and authenticates else "",
    )


async def attempt_host(
    host: message_pb2.RouteHost,
    job: message_pb2.DeliveryJob,
    recipients: list[str],
    options: SmtpOptions,
    pool: ConnectionPool["SmtpConnection"] | None = None,
    dialect: Dialect = SMTP_DIALECT,
) -> HostAttempt:
    """Deliver `job` to `recipients` through `host` in `dialect`, on a cached session when `pool` has one.

    A failed TLS handshake is retried in plaintext; a cached session found dead (at RSET,
    or lost before any recipient was answered) is replaced by a new one.
    """
    key = connection_key(host, job, options)
    if pool is not None:
        connection = await _cached(pool, key, job, options)
        if connection is not None:
            transaction = MailTransaction(connection, job, recipients, options)
            attempt = await _run(connection, transaction)
            if transaction.stale:  # its pipelined RSET failed: closed, as _cached drops one
                logger.debug(
                    "cached connection to %s no longer usable; dropped",
                    connection.label,
                    extra={"host": connection.label},
                )
            elif not (transaction.lost and not attempt.results):
                return await _finish(connection, transaction, attempt, pool, key)
            else:
                logger.info(
                    "cached connection to %s was lost (%s); retrying on a new connection",
                    connection.label,
                    attempt.failure.diagnostic if attempt.failure else "",
                    extra={"host": connection.label},
                )
    try:
        connection, transaction, attempt = await _fresh(host, job, recipients, options, dialect, starttls=True)
    except TlsFailed as exc:
        label = dialect.label(host)
        logger.warning(
            "TLS handshake with %s failed (%s); delivering in plaintext",
            label,
            exc,
            extra={"host": label},
        )
        connection, transaction, attempt = await _fresh(host, job, recipients, options, dialect, starttls=False)
    return await _finish(connection, transaction, attempt, pool, key)


async def _cached(
    pool: ConnectionPool["SmtpConnection"], key: ConnectionKey, job: message_pb2.DeliveryJob, options: SmtpOptions
) -> "SmtpConnection | None":
    """An idle session for `key` that answered RSET, or None; dead ones are dropped.

    A session that pipelines gets no RSET of its own here: it goes out in front of the
    transaction's first group (mail_transaction.py), one write and one round trip fewer
    per reuse; a session that fails it there is dropped and replaced as here.
    """
    while (connection := pool.take(key)) is not None:
        connection.bind(job, options)
        if connection.pipelines():
            connection.reset_due = True
            return connection
        try:
            usable = await connection.reset()
        except BaseException:  # cancelled during RSET
            connection.close()
            raise
        if usable:
            SMTP_CONNECTIONS_REUSED.inc()
            return connection
        logger.debug(
            "cached connection to %s no longer usable; dropped",
            connection.label,
            extra={"host": connection.label},
        )
    return None


async def _fresh(
    host: message_pb2.RouteHost,
    job: message_pb2.DeliveryJob,
    recipients: list[str],
    options: SmtpOptions,
    dialect: Dialect,
    *,
    starttls: bool,
) -> "tuple[SmtpConnection, MailTransaction, HostAttempt]":
    """A new session: open it, then run the transaction; raises TlsFailed for a failed handshake."""
    connection = SmtpConnection(host, job, options, starttls=starttls, dialect=dialect)
    transaction = MailTransaction(connection, job, recipients, options)
    try:
        await connection.open()
    except HostFailed as exc:
        connection.close()
        return connection, transaction, HostAttempt(failure=exc.failure)
    except SMTPTimeoutError:
        connection.count("timeout")
        connection.close()
        return connection, transaction, HostAttempt(failure=connection.timed_out())
    except (SMTPException, OSError) as exc:
        connection.count("error")
        connection.close()
        return connection, transaction, HostAttempt(failure=connection.lost(exc))
    except BaseException:  # TlsFailed, cancellation
        connection.count("error")
        connection.close()
        raise
    return connection, transaction, await _run(connection, transaction)


async def _run(connection: "SmtpConnection", transaction: "MailTransaction") -> HostAttempt:
    try:
        return await transaction.run()
    except BaseException:  # cancelled mid-transaction: the session's state is unknown
        connection.close()
        raise


async def _finish(
    connection: "SmtpConnection",
    transaction: "MailTransaction",
    attempt: HostAttempt,
    pool: ConnectionPool["SmtpConnection"] | None,
    key: ConnectionKey,
) -> HostAttempt:
    """Give a clean session to the idle cache, or QUIT it."""
    attempt.tls = connection.tls
    attempt.tls_version, attempt.tls_cipher = connection.tls_session()
    attempt.greeted = connection.greeted
    if pool is not None and pool.enabled and transaction.clean and connection.is_connected:
        pool.put(key, connection)
    else:
        await connection.quit()
    return attempt
