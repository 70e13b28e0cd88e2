"""What an event is on the wire: its id, the body a sink receives, the webhook headers.
Pure: values in, bytes and strings out (the id draws on the clock and on randomness).

The headers follow Standard Webhooks: ``webhook-id`` (the event id: the same on every
attempt and replay, so receivers can deduplicate), ``webhook-timestamp`` (the attempt's
time) and, with a secret, ``webhook-signature`` (:mod:`trigger_engine.core.signing`).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from datetime import datetime

import orjson

from trigger_engine import __version__
from trigger_engine.clock import isoformat_z
from trigger_engine.core.exact_json import Unencodable, dumps
from trigger_engine.core.signing import sign_all
from trigger_engine.core.slack import slack_body
from trigger_engine.types import DueDelivery

USER_AGENT = f"trigger-engine/{__version__}"

# The largest item an event holds (its JSON text): a receiver, the database and a replay
# all handle it whole. A larger one is quarantined, not sent.
MAX_ITEM_BYTES = 16 * 1024 * 1024

# The engine's own test event: ``check`` sends one to every sink, whatever its ``events``.
ENGINE_TEST = "engine.test"

__all__ = ["ENGINE_TEST", "MAX_ITEM_BYTES", "USER_AGENT", "Unencodable"]

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_event_id() -> str:
    """``evt_`` + a ULID (48-bit millisecond time, 80 random bits, Crockford base32)."""
    value = (time.time_ns() // 1_000_000) << 80 | int.from_bytes(secrets.token_bytes(10))
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return "evt_" + "".join(reversed(chars))


def payload_of(item: object) -> str:
    """The JSON text an event holds for ``item``: every value as it arrived (integers of
    any size, lone surrogates escaped). Raises :class:`Unencodable` for an item that
    cannot be written, or whose text is over :data:`MAX_ITEM_BYTES`."""
    text = dumps(item)
    if len(text) > MAX_ITEM_BYTES // 4 and len(text.encode()) > MAX_ITEM_BYTES:
        size = len(text.encode()) / (1024 * 1024)
        raise Unencodable(
            f"it is {size:.1f} MiB as JSON, over the {MAX_ITEM_BYTES // (1024 * 1024)} MiB "
            "an event may hold"
        )
    return text


def engine_test_event(
    sink: str, now: datetime, *, sent_by: str = "trigger-engine check"
) -> DueDelivery:
    """An ``engine.test`` event for ``sink``, ready to send like any delivery (a new
    ``evt_`` id, no account: its envelope says ``"account": null``). Nothing stores it."""
    data = {
        "message": f"a test event from {sent_by} to sink '{sink}': it arrived, so the sink works",
        "sink": sink,
        "sent_by": sent_by,
    }
    return DueDelivery(
        id=0,
        sink=sink,
        attempts=0,
        event_id=new_event_id(),
        event_type=ENGINE_TEST,
        account=None,
        created_at=now,
        payload=orjson.dumps(data),
    )


_DATA = b',"data":'


def item(delivery: DueDelivery) -> bytes:
    """The item as stored (JSON): the delivery's payload, or, for a claimed delivery,
    which brings only its envelope, the envelope's ``data``: after the first
    ``,"data":`` (the type and account before it are JSON strings, in which a quote is
    escaped) and before the closing brace."""
    if delivery.payload is not None:
        return delivery.payload
    assert delivery.envelope is not None, "a delivery has its payload or its envelope"
    return delivery.envelope[delivery.envelope.index(_DATA) + len(_DATA) : -1]


def envelope(delivery: DueDelivery) -> bytes:
    """The default body: ``{"type", "timestamp", "account", "data"}``, with ``data`` the
    item exactly as stored (no re-encoding); ``account`` is null for an operational event
    that concerns no account (stored as ``""``, which no account is called). A claimed
    delivery brings it made by the claim's SQL, byte for byte the same."""
    if delivery.envelope is not None:
        return delivery.envelope
    return b'{"type":%s,"timestamp":%s,"account":%s,"data":%s}' % (
        orjson.dumps(delivery.event_type),
        orjson.dumps(isoformat_z(delivery.created_at)),
        orjson.dumps(delivery.account or None),
        item(delivery),
    )


def body(delivery: DueDelivery, *, raw: bool, slack: bool = False) -> bytes:
    """The body one sink receives: the item alone (``raw``), a Slack-compatible
    ``{"text": ...}`` (``slack``: :mod:`trigger_engine.core.slack`) or the envelope."""
    if slack:
        return slack_body(delivery.event_type, delivery.account or "", item(delivery))
    return item(delivery) if raw else envelope(delivery)


def webhook_headers(
    delivery: DueDelivery,
    body: bytes,
    timestamp: int,
    *,
    key: bytes | None,
    extra: Mapping[str, str],
    previous_key: bytes | None = None,
) -> dict[str, str]:
    """The request headers of one attempt: the sink's own ``extra`` headers, then ours
    (they win), signed with ``key`` when the sink has a secret, and with ``previous_key``
    too while a rotated secret is still honoured (two signatures, the new one first)."""
    headers = dict(extra)
    headers.update(
        {
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            "webhook-id": delivery.event_id,
            "webhook-timestamp": str(timestamp),
        }
    )
    if key is not None:
        keys = [key] if previous_key is None else [key, previous_key]
        headers["webhook-signature"] = sign_all(keys, delivery.event_id, timestamp, body)
    return headers
