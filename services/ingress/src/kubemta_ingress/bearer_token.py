"""Bearer tokens as RFC 6750 writes them, and the `KUBEMTA_API_TOKEN` setting's type.

RFC 6750 §2.1: `credentials = "Bearer" 1*SP b64token`, where (RFC 7235 §2.1, RFC 6750 §2.1)
`b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`. A configured
token must have that syntax (a client could not send anything else) and at least
`MIN_TOKEN_LENGTH` characters; an empty value means "no token" (the API then refuses
every request, api_auth.py). Files from the secrets directory are read stripped, so a
Secret written with a trailing newline still works.
"""

import re
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, SecretStr

B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*\Z")
"""RFC 6750 §2.1 b64token."""
MIN_TOKEN_LENGTH = 16
"""Shorter shared secrets are guessable; `openssl rand -hex 32` or the chart's generated token are 32+."""


def _empty_is_none(value: object) -> object:
    if isinstance(value, str | SecretStr):
        text = value.get_secret_value() if isinstance(value, SecretStr) else value
        if not text.strip():
            return None
        return SecretStr(text.strip())
    return value


def _check_token(value: SecretStr | None) -> SecretStr | None:
    if value is None:
        return None
    text = value.get_secret_value()
    if len(text) < MIN_TOKEN_LENGTH:
        raise ValueError(f"the API token must have at least {MIN_TOKEN_LENGTH} characters")
    if not B64TOKEN.match(text):
        raise ValueError("the API token may only hold letters, digits and -._~+/ (then = at the end): RFC 6750 §2.1")
    return value


ApiToken = Annotated[SecretStr | None, BeforeValidator(_empty_is_none), AfterValidator(_check_token)]
"""The `KUBEMTA_API_TOKEN` setting: None (unset or empty) or a valid bearer token; never echoed in errors."""
