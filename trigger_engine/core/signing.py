"""Standard Webhooks signatures (https://www.standardwebhooks.com). Pure.

``webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`` keyed by the
base64-decoded part of a ``whsec_...`` secret. Written out here (it is five lines of
the spec) rather than through the ``standardwebhooks`` package, whose ``sign`` takes a
datetime and mis-renders non-UTC ones; the tests verify our output with that package.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Sequence

SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix, not a secret
NEW_SECRET_BYTES = 32  # what ``sinks secret`` draws (the spec asks for 24 to 64)


def new_secret() -> str:
    """A new random signing secret: ``whsec_`` + the base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(NEW_SECRET_BYTES)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_`` secret. ValueError (without the secret) if malformed."""
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the secret is not 'whsec_' followed by base64") from None


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value for one attempt."""
    signed = b"%s.%d.%s" % (msg_id.encode(), timestamp, body)
    digest = hmac.digest(key, signed, hashlib.sha256)  # one call into OpenSSL
    return "v1," + base64.b64encode(digest).decode()


def sign_all(keys: Sequence[bytes], msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value signed with each of ``keys``, space-separated
    (``v1,<new> v1,<old>`` while a secret is rotated): the Standard Webhooks spec lets a
    header carry several signatures, and a receiver accepts the webhook if one matches."""
    return " ".join(sign(key, msg_id, timestamp, body) for key in keys)
