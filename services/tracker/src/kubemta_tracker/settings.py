"""The tracker's configuration (`KUBEMTA_*`), validated at start-up.

The API tokens are lists of `name:token` (comma- or newline-separated, as a Secret file holds
them): the name is who the caller is (an admin action's actor, in its event), the token its
shared secret (RFC 6750 b64token syntax, at least `MIN_TOKEN_LENGTH` characters). Admin tokens
may also read. The index keeps what the `events` stream keeps (`KUBEMTA_EVENTS_MAX_AGE`).
"""

import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, SecretStr
from pydantic_settings import NoDecode

from kubemta_common.config_types import Duration, Listen, parse_listen
from kubemta_common.settings import ServiceSettings

TOKEN_NAME = re.compile(r"[a-z0-9._-]{1,64}\Z")
"""A token's name: the actor recorded for what its holder does."""
B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*\Z")
"""RFC 6750 §2.1 b64token: the only tokens a client can send in `Authorization: Bearer`."""
MIN_TOKEN_LENGTH = 16
"""Shorter shared secrets are guessable (`openssl rand -hex 32` gives 64 characters)."""
MAX_TOKEN_LENGTH = 4096


def parse_tokens(value: Any) -> Any:
    """`name:token,name:token` (or one per line) -> {name: SecretStr(token)}; errors never echo a token."""
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if not isinstance(value, str):
        return value
    tokens: dict[str, SecretStr] = {}
    for index, item in enumerate(re.split(r"[,\n]", value), start=1):
        item = item.strip()
        if not item:
            continue
        name, colon, token = item.partition(":")
        if not colon:
            raise ValueError(f"entry {index} is not name:token")
        if not TOKEN_NAME.match(name):
            raise ValueError(f"entry {index}: a token's name is 1-64 of a-z 0-9 . _ -")
        if name in tokens:
            raise ValueError(f"entry {index}: the name {name!r} is listed twice")
        if not MIN_TOKEN_LENGTH <= len(token) <= MAX_TOKEN_LENGTH:
            raise ValueError(f"entry {index} ({name}): a token has {MIN_TOKEN_LENGTH}-{MAX_TOKEN_LENGTH} characters")
        if not B64TOKEN.match(token):
            raise ValueError(f"entry {index} ({name}): a token holds only letters, digits and -._~+/ (= at the end)")
        tokens[name] = SecretStr(token)
    return tokens


TokenTable = Annotated[dict[str, SecretStr], NoDecode, BeforeValidator(parse_tokens)]
"""API tokens written as `name:token,...`, parsed to {name: token}."""


class TrackerSettings(ServiceSettings):
    """Configuration of the tracker service."""

    tracker_listen: Listen = Field(
        default=parse_listen("127.0.0.1:8025"),
        description="host:port of the tracker API (find, show, summary, duplicate checks, queue administration)",
    )
    metrics_listen: Listen = Field(
        default=parse_listen("127.0.0.1:9105"), description="host:port for /metrics, /healthz, /readyz"
    )
    index_path: Path = Field(
        default=Path("tracker-index.sqlite3"),
        description=(
            "SQLite file of this replica's index of the `events` stream (the chart mounts an emptyDir: the index "
            "is rebuilt from the stream when the file is new)"
        ),
    )
    tracker_read_tokens: TokenTable = Field(
        default="",
        validate_default=True,
        description=(
            "API tokens that may read (find, show, summary, held, duplicate checks), as name:token,... "
            "(from a Secret; a token has at least 16 characters)"
        ),
    )
    tracker_admin_tokens: TokenTable = Field(
        default="",
        validate_default=True,
        description=(
            "API tokens that may also flush, hold, release and delete, as name:token,... (the name is the "
            "actor recorded in the admin action's event)"
        ),
    )
    tracker_max_body: int = Field(
        default=64 * 1024,
        ge=1024,
        le=16 * 1024 * 1024,
        description=(
            "Largest request body the tracker API reads, in bytes (an admin command's JSON is under 2 KiB); a larger "
            "one is answered 413 before routing and authentication, without reading the rest (body_limit.py)"
        ),
    )
    tracker_body_timeout: Duration = Field(
        default=10.0,
        gt=0,
        description=(
            "Longest time a request body may take to arrive (uvicorn has no such bound); then 408 and the connection "
            "is closed"
        ),
    )
    sync_timeout: Duration = Field(
        default=2.0,
        gt=0,
        description=(
            "Longest wait of a duplicate check for the index to catch up with the stream (barrier); then 503 and "
            "the caller goes on as before"
        ),
    )
    idempotency_claim_ttl: Duration = Field(
        default=60.0,
        gt=0,
        le=3600,
        description=(
            "Age after which an Idempotency-Key claim of the HTTP API no longer holds its key, so a retry may take it "
            "over (the request of a crashed ingress must not block its key); longer than the ingress' publish "
            "timeout (KUBEMTA_PUBLISH_TIMEOUT, 10 s), so a live request is never overtaken"
        ),
    )
    prune_interval: Duration = Field(
        default=600.0,
        gt=0,
        description="How often the index drops what is older than KUBEMTA_EVENTS_MAX_AGE (the stream's retention)",
    )
