"""Standard Webhooks signatures: the spec's published test vector, the secret forms, and verify() against
tampering, replays and hostile headers."""

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kubemta_webhooks.signing import VerificationError, secret_bytes, signature, signed_headers, verify

# The test vector of the Standard Webhooks reference libraries (standard-webhooks/standard-webhooks, its
# libraries' tests): the same secret, id, timestamp and body give this signature.
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TIMESTAMP = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_the_published_test_vector_reproduces() -> None:
    assert signature(secret_bytes(VECTOR_SECRET), VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY) == VECTOR_SIGNATURE


def test_verify_accepts_the_test_vector_among_other_signatures() -> None:
    headers = {
        "webhook-id": VECTOR_ID,
        "webhook-timestamp": str(VECTOR_TIMESTAMP),
        "webhook-signature": "v1,bm9wZQ== " + VECTOR_SIGNATURE,
    }
    assert verify(VECTOR_SECRET, headers, VECTOR_BODY, now=VECTOR_TIMESTAMP + 10) == VECTOR_ID


def test_signed_headers_verify() -> None:
    key = secret_bytes(VECTOR_SECRET)
    headers = signed_headers(key, "ev1", b"{}", now=1_700_000_000)
    assert headers["webhook-timestamp"] == "1700000000"
    assert verify(key, headers, b"{}", now=1_700_000_000) == "ev1"


@pytest.mark.parametrize(
    "change",
    [
        {"body": b'{"test": 2432232315}'},
        {"webhook-id": "msg_other"},
        {"webhook-timestamp": str(VECTOR_TIMESTAMP + 1)},
        {"webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE"},
        {"webhook-signature": "v2,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="},
        {"webhook-signature": ""},
        {"webhook-timestamp": "1614265330.0"},
        {"webhook-timestamp": "-1614265330"},
        {"webhook-timestamp": "١٦١٤٢٦٥٣٣٠"},  # Arabic-Indic digits: isdigit() but not ASCII
        {"webhook-signature": "v1," + "A" * 5000},
    ],
)
def test_verify_refuses_tampering(change: dict[str, object]) -> None:
    headers = {
        "webhook-id": VECTOR_ID,
        "webhook-timestamp": str(VECTOR_TIMESTAMP),
        "webhook-signature": VECTOR_SIGNATURE,
    }
    body = VECTOR_BODY
    for key, value in change.items():
        if key == "body":
            assert isinstance(value, bytes)
            body = value
        else:
            assert isinstance(value, str)
            headers[key] = value
    with pytest.raises(VerificationError):
        verify(VECTOR_SECRET, headers, body, now=VECTOR_TIMESTAMP)


def test_verify_refuses_a_replay_outside_the_tolerance() -> None:
    headers = {
        "webhook-id": VECTOR_ID,
        "webhook-timestamp": str(VECTOR_TIMESTAMP),
        "webhook-signature": VECTOR_SIGNATURE,
    }
    with pytest.raises(VerificationError, match="tolerance"):
        verify(VECTOR_SECRET, headers, VECTOR_BODY, now=VECTOR_TIMESTAMP + 301)
    with pytest.raises(VerificationError, match="tolerance"):
        verify(VECTOR_SECRET, headers, VECTOR_BODY, now=VECTOR_TIMESTAMP - 301)


def test_secret_forms() -> None:
    raw = b"0123456789abcdef01234567"
    assert secret_bytes("whsec_" + base64.b64encode(raw).decode()) == raw
    assert secret_bytes(raw.decode()) == raw
    for bad in ("whsec_" + base64.b64encode(b"short").decode(), "short", "whsec_not*base64*at*all*************", ""):
        with pytest.raises(ValueError):
            secret_bytes(bad)


@given(
    st.dictionaries(st.sampled_from(["webhook-id", "webhook-timestamp", "webhook-signature", "x"]), st.text()),
    st.binary(),
)
def test_verify_of_hostile_headers_only_raises_verification_error(headers: dict[str, str], body: bytes) -> None:
    try:
        verify(VECTOR_SECRET, headers, body, now=VECTOR_TIMESTAMP)
    except VerificationError:
        pass
