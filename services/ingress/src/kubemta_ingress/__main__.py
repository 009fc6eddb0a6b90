"""Entry point of `kubemta-ingress`: the SMTP listeners in front of the `inbound` queue.

Start-up order: operations HTTP endpoint and the (retrying) broker connection first,
then the HTTP API (`KUBEMTA_HTTP_LISTEN`: the domain check, api.py), then the SMTP
listeners (MX/relay, submission, SMTPS; each on when its `*_LISTEN` is set), which
accept connections even while the broker is still unreachable (messages then get
`451 4.3.0`; /readyz reports 503 until connected). The listeners share one handler, one
TLS certificate (reloaded when its files change), one authenticator and one connection
limiter. On SIGTERM: stop accepting, let open transactions finish within
`KUBEMTA_DRAIN_SECONDS`, close the remaining sessions, stop the HTTP API, close the
broker connection.
"""

import asyncio
import logging
import ssl
from typing import cast

from aiosmtpd.smtp import AuthenticatorType

from kubemta_common.amqp.publisher import BusPublisher
from kubemta_common.command_line import service_main
from kubemta_common.errors import ConfigError
from kubemta_common.events.emitter import EventSink
from kubemta_common.events.tracker_client import FirstQueueIds, TrackerClient
from kubemta_common.gc_tuning import freeze_startup
from kubemta_common.http_server import HttpServer
from kubemta_common.service import ServiceCore
from kubemta_ingress import metrics
from kubemta_ingress.acceptance import MailAcceptance, SuppressedRecipients
from kubemta_ingress.api import app_from_settings
from kubemta_ingress.api_keys import build_api_key_verifier
from kubemta_ingress.auth import build_authenticator
from kubemta_ingress.data_budget import DataBudget
from kubemta_ingress.direct_jobs import DirectJobs, DirectJobsFollowers
from kubemta_ingress.handler import IngressHandler
from kubemta_ingress.idempotency import Idempotency
from kubemta_ingress.limits import ConnectionLimiter, SessionLimits
from kubemta_ingress.listeners import ListenerKind, ListenerPolicy
from kubemta_ingress.policy import RelayPolicy
from kubemta_ingress.proxy import ProxyTrust
from kubemta_ingress.recipient_verify import RecipientVerifier
from kubemta_ingress.recipient_verify_config import build_verifier
from kubemta_ingress.server import SessionOptions, SmtpServer
from kubemta_ingress.serviceaccounts import ServiceAccountVerifier, build_serviceaccount_verifier
from kubemta_ingress.settings import IngressSettings
from kubemta_ingress.suppression_check import build_suppression_check
from kubemta_ingress.tls import TlsContextStore

logger = logging.getLogger(__name__)

DESCRIPTION = "kubemta ingress: the SMTP listeners (MX, submission, SMTPS) that queue accepted mail on the bus."
SERVICE = "ingress"


def load_tls(settings: IngressSettings) -> TlsContextStore | None:
    """The certificate store, None without `KUBEMTA_TLS_CERT_FILE`; a pair that does not load is a ConfigError."""
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None
    try:
        return TlsContextStore(settings.tls_cert_file, settings.tls_key_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"KUBEMTA_TLS_CERT_FILE/KUBEMTA_TLS_KEY_FILE do not load: {exc}") from exc


def load_authenticator(
    settings: IngressSettings, serviceaccounts: ServiceAccountVerifier | None = None
) -> AuthenticatorType | None:
    """The AUTH PLAIN/LOGIN authenticator for `KUBEMTA_USERS_FILE` and ServiceAccount tokens
    (kubemta_ingress.auth), None when neither is configured."""
    return cast(AuthenticatorType | None, build_authenticator(settings, serviceaccounts))


def build_handler(
    settings: IngressSettings,
    publisher: BusPublisher,
    recipients: RecipientVerifier | None = None,
    *,
    events: EventSink | None = None,
    tracker: FirstQueueIds | None = None,
    suppressions: SuppressedRecipients | None = None,
    direct: DirectJobs | None = None,
) -> IngressHandler:
    """The SMTP handler, whose `acceptance` the HTTP API's POST /v1/messages shares; `suppressions`
    (suppression_check.build_suppression_check; None: not checked) refuses suppressed recipients of outbound
    senders; `direct` (None: none) queues a message's one job straight to `deliver` when it may (direct_jobs.py)."""
    return IngressHandler(
        MailAcceptance(
            hostname=settings.hostname,
            policy=RelayPolicy.create(settings.local_domains, settings.relay_networks),
            max_recipients=settings.max_recipients,
            max_message_size=settings.max_message_size,
            publisher=publisher,
            max_hops=settings.max_hops,
            recipients=recipients,
            events=events,
            tracker=tracker,
            duplicate_window=settings.duplicate_window,
            suppressions=suppressions,
            direct=direct,
        )
    )


def build_servers(
    settings: IngressSettings,
    publisher: BusPublisher,
    tls: TlsContextStore | None,
    recipients: RecipientVerifier | None = None,
    *,
    events: EventSink | None = None,
    tracker: FirstQueueIds | None = None,
    handler: IngressHandler | None = None,
    serviceaccounts: ServiceAccountVerifier | None = None,
    budget: DataBudget | None = None,
) -> list[SmtpServer]:
    """One SMTP server per listener that `settings` turns on, sharing `tls` (see load_tls) and the
    recipient verifier (recipient_verify_config.build_verifier; None: local recipients are not verified);
    lifecycle events go to `events`, and `tracker` (None: no duplicate check) recognises clients' retries.
    `handler` (build_handler) is made here when not given; `serviceaccounts` lets apps AUTH with their token;
    `budget` (KUBEMTA_MESSAGE_DATA_BUDGET, made here when not given) is shared with the HTTP API."""
    if handler is None:
        handler = build_handler(settings, publisher, recipients, events=events, tracker=tracker)
    authenticator = load_authenticator(settings, serviceaccounts)
    trust = ProxyTrust.create(settings.proxy_protocol_trusted, settings.proxy_protocol_timeout)
    relaying_proxies = [net for net in trust.networks if any(net.overlaps(r) for r in settings.relay_networks)]
    if relaying_proxies:
        logger.warning(
            "PROXY-trusted networks overlap KUBEMTA_RELAY_NETWORKS: a proxy's own health checks may relay",
            extra={"networks": [str(net) for net in relaying_proxies]},
        )
    session_limits = SessionLimits(
        max_errors=settings.max_errors,
        data_timeout=settings.data_receive_timeout,
        max_session_duration=settings.max_session_duration,
    )
    connections = ConnectionLimiter(settings.max_connections, settings.max_connections_per_ip)
    if budget is None:
        budget = DataBudget(settings.message_data_budget)
    data = budget
    metrics.MESSAGE_DATA_IN_FLIGHT.set_function(lambda: data.in_use)
    listeners = (
        (ListenerKind.SMTP, settings.smtp_listen),
        (ListenerKind.SUBMISSION, settings.submission_listen),
        (ListenerKind.SMTPS, settings.smtps_listen),
    )
    servers = []
    for kind, listen in listeners:
        if listen is None:
            continue
        policy = ListenerPolicy.for_kind(kind)
        if policy.auth_required and authenticator is None:
            logger.warning(
                "the %s listener requires AUTH but KUBEMTA_USERS_FILE is not set: it accepts no mail",
                kind.value,
            )
        options = SessionOptions(
            policy=policy,
            tls=tls,
            authenticator=authenticator,
            proxy=trust,
            session_limits=session_limits,
            connections=connections,
            data_budget=budget,
        )
        servers.append(
            SmtpServer(
                handler,
                listen=listen,
                hostname=settings.hostname,
                max_message_size=settings.max_message_size,
                timeout=settings.smtp_timeout,
                options=options,
                reuse_port=settings.smtp_reuse_port,
            )
        )
    return servers


async def serve(stop: asyncio.Event) -> None:
    """Run the ingress until `stop` is set, then drain and close."""
    settings = IngressSettings.load()
    tls = load_tls(settings)
    recipients = build_verifier(settings)  # a recipient map that cannot be read stops the start here
    serviceaccounts = build_serviceaccount_verifier(settings)  # a broken identities file stops the start here
    api_keys = build_api_key_verifier(settings)
    core = ServiceCore(SERVICE, settings)
    tracker = TrackerClient.from_settings(settings)  # None: no duplicate checks, no Idempotency-Keys
    await core.start(stop)
    followers = DirectJobsFollowers.from_settings(settings)  # None: KUBEMTA_ROUTE_SHORTCUT is off
    servers: list[SmtpServer] = []
    watcher: asyncio.Task[None] | None = None
    api: HttpServer | None = None
    try:
        direct = followers.start(core.broker) if followers is not None else None
        handler = build_handler(
            settings,
            core.publisher,
            recipients,
            events=core.events,
            tracker=tracker,
            suppressions=build_suppression_check(settings, tracker),
            direct=direct,
        )
        budget = DataBudget(settings.message_data_budget)  # one for SMTP sessions and API requests
        servers = build_servers(
            settings, core.publisher, tls, handler=handler, serviceaccounts=serviceaccounts, budget=budget
        )
        if not servers:
            logger.warning("every SMTP listener is off")
        if tls is not None:
            watcher = asyncio.create_task(tls.watch(settings.tls_reload_interval))
        for server in servers:
            await server.start()
        if settings.http_listen is not None:  # after SMTP: taking mail comes first
            verifiers = [verifier for verifier in (api_keys, serviceaccounts) if verifier is not None]
            idempotency = Idempotency(tracker, settings.idempotency_window)
            app = app_from_settings(
                settings, handler.acceptance, verifiers=verifiers, idempotency=idempotency, budget=budget
            )
            api = HttpServer(app, settings.http_listen)
            await api.start()
            logger.info("serving the HTTP API on %s", settings.http_listen)
        freeze_startup()
        await stop.wait()
        core.begin_shutdown()  # /readyz 503 first: load balancers stop sending while we still accept
        if settings.shutdown_delay > 0:
            logger.info("still accepting for %.0fs before draining", settings.shutdown_delay)
            await asyncio.sleep(settings.shutdown_delay)
    finally:
        core.begin_shutdown()
        if watcher is not None:
            watcher.cancel()
        # A session queueing a message waits for its confirm (up to the publish timeout) before it closes.
        close_wait = settings.publish_timeout + 1.0
        await asyncio.gather(*(server.stop(settings.drain_seconds, close_wait=close_wait) for server in servers))
        await answer_publishes(core, close_wait)
        if followers is not None:
            await followers.stop()
        await recipients.close()
        if tracker is not None:
            await tracker.close()
        if serviceaccounts is not None:
            await serviceaccounts.close()
        if api is not None:
            await api.stop()
        await core.close()
    logger.info("stopped")


async def answer_publishes(core: ServiceCore, within: float) -> None:
    """Wait (at most `within` seconds) until every publish has its confirm, so no client's reply depends on a
    broker connection about to close: a message queued while its client got 451 would be queued twice."""
    try:
        async with asyncio.timeout(within):
            await core.publisher.wait_idle()
    except TimeoutError:
        logger.warning("%d publishes still unconfirmed at shutdown", core.publisher.in_flight)


def main() -> None:
    """Console script `kubemta-ingress` (the users file and the domain check are `kubemta-admin users|domains`)."""
    service_main(SERVICE, DESCRIPTION, IngressSettings, serve)


if __name__ == "__main__":
    main()
