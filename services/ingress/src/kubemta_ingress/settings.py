"""The ingress' configuration (`KUBEMTA_*`), validated at start-up.

Limits follow Postfix' defaults: `message_size_limit` (10240000 bytes),
`smtpd_recipient_limit` (1000) and `smtpd_timeout` (300s). The HTTP API and
`kubemta-admin domains check` read the domain check's settings: sending IPs, DKIM
keys directory, name servers and DNS timeout (the latter two as the dns-resolver's).
"""

import ipaddress
from pathlib import Path
from typing import Annotated, Any, Self

from pydantic import BeforeValidator, Field, field_validator, model_validator
from pydantic_settings import NoDecode

from kubemta_common.config_types import (
    AddressList,
    CommaList,
    Duration,
    Listen,
    NetworkList,
    parse_listen,
    split_list,
)
from kubemta_common.routing_settings import DnsClientSettings, RouteShortcutSettings, TransportSettings
from kubemta_common.settings import BUS_HEADROOM, ServiceSettings
from kubemta_ingress.bearer_token import ApiToken
from kubemta_ingress.policy import normalize_domain
from kubemta_ingress.recipient_map import parse_recipient_maps


def _to_recipient_maps(value: Any) -> Any:
    items = split_list(value)
    return parse_recipient_maps(items) if isinstance(items, list) else items


RecipientMapPaths = Annotated[dict[str, Path], NoDecode, BeforeValidator(_to_recipient_maps)]
"""`KUBEMTA_RECIPIENT_MAPS` written as `domain=/path,...`, parsed to {canonical domain: path}."""


class IngressSettings(ServiceSettings, DnsClientSettings, TransportSettings, RouteShortcutSettings):
    """Configuration of the ingress service."""

    smtp_listen: Listen = Field(
        default=parse_listen("127.0.0.1:2525"), description="host:port of the MX/relay SMTP listener; empty = off"
    )
    metrics_listen: Listen = Field(
        default=parse_listen("127.0.0.1:9101"), description="host:port for /metrics, /healthz, /readyz"
    )
    local_domains: CommaList = Field(
        default_factory=list, description="Domains accepted from any client (final destinations)"
    )
    # Recipient verification of local domains at RCPT (recipient_verify.py; KUBEMTA_TRANSPORTS: TransportSettings).
    recipient_maps: RecipientMapPaths = Field(
        default="",
        validate_default=True,
        description=(
            "Valid recipients of local domains as domain=/path/to/file,...: one address or local part per line "
            "(case-insensitive), re-read when the file changes; an unlisted recipient gets 550 5.1.1"
        ),
    )
    recipient_map_check_interval: Duration = Field(
        default=5.0, ge=0, description="How often a recipient map file is checked for changes"
    )
    recipient_delimiter: str = Field(
        default="",
        pattern=r"^[^\s@\"]*$",
        description="Characters starting a local part's extension (alice+tag is alice) in recipient maps; empty: none",
    )
    recipient_verify: bool = Field(
        default=True,
        description=(
            "Ask the LMTP server of a local domain (KUBEMTA_TRANSPORTS) at RCPT whether a recipient exists "
            "(550 5.1.1 unknown, 450 4.1.1 no answer); false accepts any local part of those domains"
        ),
    )
    recipient_verify_timeout: Duration = Field(
        default=10.0, gt=0, description="Longest time one recipient verification may take, then 450 4.1.1"
    )
    recipient_verify_concurrency: int = Field(
        default=20, ge=1, description="LMTP recipient probes running at once per ingress process (more wait)"
    )
    recipient_verify_positive_ttl: Duration = Field(
        default=3600.0, ge=0, description="How long a recipient the mailbox server accepted is remembered"
    )
    recipient_verify_negative_ttl: Duration = Field(
        default=600.0, ge=0, description="How long a recipient the mailbox server refused is remembered"
    )
    recipient_verify_cache_size: int = Field(
        default=10000, ge=0, description="Recipient verification answers kept (least recently used go first)"
    )
    suppression_check: bool = Field(
        default=True,
        description=(
            "Refuse recipients on the cluster-wide suppression list (asked of the tracker, KUBEMTA_TRACKER_URL) for "
            "authenticated and relay-network senders and the HTTP API; mail from the internet is not checked"
        ),
    )
    suppression_check_timeout: Duration = Field(
        default=0.5,
        gt=0,
        le=10,
        description="Longest wait for the tracker's suppression check; then the recipient is accepted (fail-open)",
    )
    suppression_cache_ttl: Duration = Field(
        default=10.0,
        ge=0,
        le=300,
        description="Seconds a suppression check's answer (suppressed or not) is reused by this ingress (0: never)",
    )
    relay_networks: NetworkList = Field(
        default_factory=lambda: [ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128")],
        description="Client networks allowed to relay to any domain (CIDR list)",
    )
    message_data_budget: int = Field(
        default=32 * 1024 * 1024,
        ge=64 * 1024,
        description=(
            "Bytes of message data all SMTP sessions may hold at once, received and not yet queued; a session over it "
            "gets 452 4.3.1 (about a third of the memory the ingress may use for messages)"
        ),
    )
    max_recipients: int = Field(default=1000, ge=1, description="Most recipients accepted per message")
    max_hops: int = Field(
        default=100,  # RFC 5321 section 6.3: a loop limit SHOULD be at least 100 Received: headers
        ge=1,
        description="Most Received: headers a message may carry; more is refused as a loop (554 5.4.6)",
    )
    smtp_timeout: Duration = Field(default=300.0, gt=0, description="Idle time after which a session is closed")
    duplicate_window: Duration = Field(
        default=3600.0,
        ge=0,
        description=(
            "How long a client's retry of a message already queued (same Message-ID, envelope and body) is answered "
            "250 with the first queue id instead of being queued again (needs KUBEMTA_TRACKER_URL); 0 = off"
        ),
    )
    submission_listen: Listen = Field(
        default=None, description="host:port of the submission listener (STARTTLS + AUTH required); empty = off"
    )
    smtps_listen: Listen = Field(
        default=None, description="host:port of the implicit-TLS submission listener (AUTH required); empty = off"
    )
    tls_cert_file: Path | None = Field(
        default=None, description="PEM certificate chain for STARTTLS and SMTPS; reloaded when the file changes"
    )
    tls_key_file: Path | None = Field(default=None, description="PEM private key for tls_cert_file")
    tls_reload_interval: Duration = Field(
        default=30.0, gt=0, description="How often the certificate files are checked for changes"
    )
    users_file: Path | None = Field(
        default=None, description="Users allowed to AUTH (scrypt-hashed passwords and allowed sender identities)"
    )
    auth_failure_limit: int = Field(
        default=5, ge=1, description="Failed AUTH attempts per client IP or username within the window before refusal"
    )
    auth_failure_window: Duration = Field(
        default=900.0, gt=0, description="Window over which failed AUTH attempts are counted (and refusal lasts)"
    )
    auth_failure_delay: Duration = Field(
        default=1.0, ge=0, description="Delay added to each failed AUTH reply, growing with the failure count"
    )
    auth_verify_threads: int = Field(
        default=2,
        ge=1,
        description="AUTH password checks run at once, on threads off the event loop (scrypt: ~50 ms, 16 MiB each)",
    )
    auth_verify_queue: int = Field(
        default=32, ge=0, description="AUTH password checks that may wait for a thread; more get 454 4.7.0"
    )
    auth_max_tracked_clients: int = Field(
        default=50_000,
        ge=1,
        description=(
            "Client IPs (IPv6: /64s) whose failed AUTH attempts are remembered (~350 bytes each); "
            "when full, aged-out then unlocked entries are forgotten before any lockout"
        ),
    )
    proxy_protocol_trusted: NetworkList = Field(
        default_factory=list, description="Networks whose connections must start with a PROXY v1/v2 header"
    )
    proxy_protocol_timeout: Duration = Field(default=5.0, gt=0, description="Time allowed for the PROXY header")
    max_connections: int = Field(default=1000, ge=1, description="Concurrent SMTP connections in total (then 421)")
    max_connections_per_ip: int = Field(
        default=50, ge=1, description="Concurrent SMTP connections per client IP (then 421)"
    )
    max_errors: int = Field(default=10, ge=1, description="Protocol errors in one session before 421 and disconnect")
    data_receive_timeout: Duration = Field(
        default=600.0, gt=0, description="Longest time to receive one message's DATA (slow clients are cut off)"
    )
    max_session_duration: Duration = Field(default=3600.0, gt=0, description="Longest time one SMTP session may last")
    shutdown_delay: Duration = Field(
        default=0.0,
        ge=0,
        description=(
            "After SIGTERM, how long the listeners keep accepting while /readyz answers 503, before the drain "
            "(the chart's preStop pause does this in Kubernetes)"
        ),
    )
    smtp_reuse_port: bool = Field(
        default=False,
        description="Let several ingress processes on one host share the SMTP ports (SO_REUSEPORT)",
    )
    http_listen: Listen = Field(
        default=parse_listen("127.0.0.1:8080"),
        description="host:port of the HTTP API (GET /v1/domains/DOMAIN/check); empty = off",
    )
    api_token: ApiToken = Field(
        default=None,
        description=(
            "Bearer token the HTTP API requires (`Authorization: Bearer TOKEN`; 16+ characters of RFC 6750 b64token: "
            "letters, digits, -._~+/ and trailing =); unset: every /v1 request is refused (503)"
        ),
    )
    api_keys_file: Path | None = Field(
        default=None,
        description=(
            "API keys for POST /v1/messages (SHA-256-hashed, with their sender identities; `kubemta-admin api-keys`), "
            "re-read when the file changes; unset: no API keys"
        ),
    )
    serviceaccount_identities_file: Path | None = Field(
        default=None,
        description=(
            "Kubernetes ServiceAccounts allowed to send, as NAMESPACE/NAME (or NAMESPACE/*):IDENTITY,... per line, "
            "re-read when the file changes; their projected tokens are verified with the TokenReview API (as an API "
            "bearer token or the SMTP AUTH PLAIN password); unset: ServiceAccount tokens are not accepted"
        ),
    )
    serviceaccount_audience: str = Field(
        default="kubemta",
        min_length=1,
        description="Audience a ServiceAccount token must be bound to (its projected volume's `audience`)",
    )
    kubernetes_api_url: str | None = Field(
        default=None,
        description=(
            "URL of the Kubernetes API for TokenReview; unset: in-cluster (KUBERNETES_SERVICE_HOST and _PORT)"
        ),
    )
    kubernetes_token_file: Path = Field(
        default=Path("/var/run/secrets/kubernetes.io/serviceaccount/token"),
        description="kubemta's own ServiceAccount token, presented to the Kubernetes API (re-read as it rotates)",
    )
    kubernetes_ca_file: Path = Field(
        default=Path("/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"),
        description="CA certificate the Kubernetes API's certificate is verified with",
    )
    tokenreview_timeout: Duration = Field(
        default=5.0, gt=0, description="Longest wait for one TokenReview answer (then the token counts as unverified)"
    )
    tokenreview_cache_ttl: Duration = Field(
        default=600.0,
        ge=0,
        description="Longest time a verified ServiceAccount token is trusted without asking again (never past expiry)",
    )
    tokenreview_negative_ttl: Duration = Field(
        default=10.0, ge=0, description="How long a token the TokenReview API refused is refused without asking again"
    )
    tokenreview_cache_size: int = Field(
        default=10000, ge=0, description="TokenReview answers kept (least recently used go first)"
    )
    api_max_request_size: int | None = Field(
        default=None,
        ge=1024,
        description=(
            "Largest POST /v1/messages request body in bytes (then 413); unset: room for a message of "
            "KUBEMTA_MAX_MESSAGE_SIZE with base64 attachments in JSON (4/3 of it plus 64 KiB)"
        ),
    )
    api_request_timeout: Duration = Field(
        default=30.0, gt=0, description="Longest time a POST /v1/messages request body may take to arrive (then 408)"
    )
    idempotency_window: Duration = Field(
        default=86400.0,
        gt=0,
        le=7 * 86400,  # the tracker keeps no claim longer
        description=(
            "How long an Idempotency-Key of POST /v1/messages is remembered, cluster-wide through the tracker "
            "(a repeat gets the first answer and queues nothing)"
        ),
    )
    api_checks_per_minute: float = Field(
        default=30.0, gt=0, description="Domain checks the HTTP API starts per minute (token bucket; then 429)"
    )
    api_check_burst: int = Field(
        default=10, ge=1, description="Domain checks the HTTP API may start at once before the per-minute rate applies"
    )
    api_max_concurrent_checks: int = Field(
        default=4, ge=1, description="Domain checks the HTTP API runs at the same time (then 429, never queued)"
    )
    api_check_timeout: Duration = Field(
        default=30.0, gt=0, description="Longest time one domain check of the HTTP API may take (then 504)"
    )
    api_cache_ttl: Duration = Field(
        default=60.0, ge=0, description="How long the HTTP API serves a domain's report from its cache; 0 = no cache"
    )
    api_cache_size: int = Field(
        default=1000, ge=0, description="Domain reports the HTTP API keeps cached (least recently used go first)"
    )
    sending_ips: AddressList = Field(
        default_factory=list,
        description="Public IP addresses this MTA sends from; the domain check compares SPF, A/AAAA and PTR with them",
    )
    dkim_keys_dir: Path | None = Field(
        default=None,
        description=(
            "Directory of DKIM keys (a mounted Secret): the queue-manager signs with the private keys "
            "DOMAIN/SELECTOR.key; the ingress' domain check compares the public keys DOMAIN/SELECTOR.pub with DNS "
            "(a .key also works, but the ingress needs none); set it on the ingress whenever the queue-manager signs "
            "(the chart does): the ingress then leaves trusted mail to the queue-manager instead of queueing it "
            "straight to deliver unsigned; unset: no signing"
        ),
    )

    @property
    def api_request_limit(self) -> int:
        """The largest POST /v1/messages body: KUBEMTA_API_MAX_REQUEST_SIZE, or what a message of
        KUBEMTA_MAX_MESSAGE_SIZE needs as base64 inside JSON."""
        if self.api_max_request_size is not None:
            return self.api_max_request_size
        return self.max_message_size * 4 // 3 + 64 * 1024

    @model_validator(mode="after")
    def _messages_fit_the_broker(self) -> Self:
        if self.max_message_size + BUS_HEADROOM > self.broker_max_message_size:
            raise ValueError(
                f"KUBEMTA_MAX_MESSAGE_SIZE ({self.max_message_size}) plus {BUS_HEADROOM} bytes for kubemta's own "
                f"headers and bus fields exceeds KUBEMTA_BROKER_MAX_MESSAGE_SIZE ({self.broker_max_message_size}): "
                "lower the first, or raise the broker's max_message_size and the second with it"
            )
        return self

    @model_validator(mode="after")
    def _tls_needs_both_files(self) -> Self:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("KUBEMTA_TLS_CERT_FILE and KUBEMTA_TLS_KEY_FILE must be set together")
        if (self.submission_listen or self.smtps_listen) and self.tls_cert_file is None:
            raise ValueError("the submission and SMTPS listeners need KUBEMTA_TLS_CERT_FILE and KUBEMTA_TLS_KEY_FILE")
        return self

    @field_validator("local_domains")
    @classmethod
    def _normalize_domains(cls, value: list[str]) -> list[str]:
        return [normalize_domain(domain) for domain in value]
