"""Tests for trigger_engine.core.signing: Standard Webhooks signatures, checked with the
reference ``standardwebhooks`` package and against an independent computation."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime

import pytest
from freezegun import freeze_time
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from trigger_engine.core.signing import SECRET_PREFIX, secret_key, sign

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # base64 of 24 bytes
OTHER_SECRET = "whsec_" + base64.b64encode(b"another-secret-of-24-byt").decode()
NOW = datetime(2026, 11, 27, 10, 0, 0, tzinfo=UTC)
TS = int(NOW.timestamp())
MSG_ID = "evt_2f1c0d9e"
BODY = b'{"type":"lead.new","account":"acme","data":{"id":"l-1","name":"\xc3\xa9"}}'


def _headers(msg_id: str, ts: int, signature: str) -> dict[str, str]:
    return {"webhook-id": msg_id, "webhook-timestamp": str(ts), "webhook-signature": signature}


@freeze_time(NOW)
@pytest.mark.parametrize(
    "secret",
    [
        pytest.param(SECRET, id="with-prefix"),
        pytest.param(SECRET.removeprefix("whsec_"), id="without-prefix"),
    ],
)
@pytest.mark.parametrize("body", [BODY, b"{}", b"[]", b'"x.y.z"'])
def test_signature_verifies_with_standardwebhooks(secret: str, body: bytes) -> None:
    signature = sign(secret_key(secret), MSG_ID, TS, body)
    assert signature.startswith("v1,")
    Webhook(SECRET).verify(body, _headers(MSG_ID, TS, signature))


@freeze_time(NOW)
@pytest.mark.parametrize(
    ("body", "msg_id", "ts", "verify_with"),
    [
        pytest.param(BODY + b" ", MSG_ID, TS, SECRET, id="body-appended"),
        pytest.param(BODY.replace(b"l-1", b"l-2"), MSG_ID, TS, SECRET, id="body-tampered"),
        pytest.param(BODY, MSG_ID + "x", TS, SECRET, id="different-id"),
        pytest.param(BODY, MSG_ID, TS + 1, SECRET, id="different-timestamp"),
        pytest.param(BODY, MSG_ID, TS - 60, SECRET, id="earlier-timestamp"),
        pytest.param(BODY, MSG_ID, TS, OTHER_SECRET, id="different-secret"),
    ],
)
def test_tampering_fails_verification(body: bytes, msg_id: str, ts: int, verify_with: str) -> None:
    signature = sign(secret_key(SECRET), MSG_ID, TS, BODY)
    with pytest.raises(WebhookVerificationError):
        Webhook(verify_with).verify(body, _headers(msg_id, ts, signature))


@pytest.mark.parametrize(
    ("secret", "msg_id", "ts", "body"),
    [
        (SECRET, MSG_ID, TS, BODY),
        (SECRET, "msg_1", 0, b""),
        (OTHER_SECRET, "00000000-0000-0000-0000-000000000000", 1_700_000_000, b'{"a":1}'),
    ],
)
def test_known_answer(secret: str, msg_id: str, ts: int, body: bytes) -> None:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    to_sign = msg_id.encode() + b"." + str(ts).encode() + b"." + body
    expected = "v1," + base64.b64encode(hmac.new(key, to_sign, hashlib.sha256).digest()).decode()
    assert sign(secret_key(secret), msg_id, ts, body) == expected


def test_known_answer_fixed_value() -> None:
    """A pinned value, so a change in how the signed string is built cannot go unnoticed."""
    key = base64.b64decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    digest = hmac.new(key, b"msg_p5jXN8AQM9LWM0D4loKWxJek.1614265330.{}", hashlib.sha256)
    expected = "v1," + base64.b64encode(digest.digest()).decode()
    assert sign(secret_key(SECRET), "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b"{}") == expected


def test_signature_is_deterministic_and_depends_on_every_input() -> None:
    key = secret_key(SECRET)
    base = sign(key, MSG_ID, TS, BODY)
    assert sign(key, MSG_ID, TS, BODY) == base
    variants = {
        sign(key, MSG_ID + "1", TS, BODY),
        sign(key, MSG_ID, TS + 1, BODY),
        sign(key, MSG_ID, TS, BODY + b"1"),
        sign(secret_key(OTHER_SECRET), MSG_ID, TS, BODY),
    }
    assert base not in variants
    assert len(variants) == 4


@pytest.mark.parametrize(
    ("secret", "expected"),
    [
        (SECRET, base64.b64decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")),
        ("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", base64.b64decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")),
        ("whsec_" + base64.b64encode(b"\x00\xff" * 8).decode(), b"\x00\xff" * 8),
    ],
)
def test_secret_key_decodes(secret: str, expected: bytes) -> None:
    assert secret_key(secret) == expected
    assert SECRET_PREFIX == "whsec_"


@pytest.mark.parametrize(
    "secret",
    [
        pytest.param("whsec_not*base64!", id="bad-characters"),
        pytest.param("whsec_abc", id="bad-padding"),
        pytest.param("whsec_ab cd==", id="space-inside"),
        pytest.param("whsec_héllo123", id="non-ascii"),
        pytest.param("whsec_whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", id="double-prefix"),
    ],
)
def test_secret_key_rejects_bad_base64_without_echoing_it(secret: str) -> None:
    with pytest.raises(ValueError, match="whsec_") as info:
        secret_key(secret)
    message = str(info.value)
    assert secret not in message
    assert secret.removeprefix("whsec_") not in message
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__
