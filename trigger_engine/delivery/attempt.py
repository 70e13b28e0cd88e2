"""One delivery attempt: the body and signed headers for a sink, the POST (aiohttp), and
what follows it by the retry policy (delivered, retry at a time, dead when the schedule is
used up, or the sink gone: disabled, and its deliveries held).

The dispatcher (:mod:`trigger_engine.delivery.dispatcher`) decides when attempts run and
records their outcomes; this module only makes one. An attempt never raises: whatever
happens becomes a recorded, retried (or dead) outcome, because a worker dying here would
keep its claim and its ``max_in_flight`` slot until the next start.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import aiohttp

from trigger_engine.config import Sink
from trigger_engine.core import events
from trigger_engine.core.retry import RetryPolicy, Verdict, decide, parse_retry_after
from trigger_engine.core.signing import secret_key
from trigger_engine.delivery.failures import describe, http_error
from trigger_engine.ops.logs import get_logger
from trigger_engine.states import RESPONSE_BODY_KEPT, DeliveryStatus
from trigger_engine.types import AttemptOutcome, DueDelivery

log = get_logger("trigger_engine.delivery")

# Bytes of a receiver's answer read at most (one read: what has arrived, usually all of a
# short answer, which lets the connection be reused); the first RESPONSE_BODY_KEPT of them
# are kept with the attempt (``events show``).
MAX_RESPONSE = 1024 * 1024

_secret_key = functools.lru_cache(maxsize=256)(secret_key)  # decoded once per sink secret


@functools.lru_cache(maxsize=256)
def _client_timeout(seconds: float) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=seconds)


def body_for(sink: Sink, delivery: DueDelivery) -> bytes:
    """The body ``sink`` receives: the envelope, the item alone (``format = "raw"``) or
    one line of text for a Slack-compatible webhook (``format = "slack"``)."""
    if sink.format == "envelope" and delivery.envelope is not None:
        return delivery.envelope  # as the claim made it: the common case, at once
    return events.body(delivery, raw=sink.format == "raw", slack=sink.format == "slack")


def headers_for(sink: Sink, delivery: DueDelivery, body: bytes, timestamp: int) -> dict[str, str]:
    """The headers of one attempt to ``sink``: its own, then the Standard Webhooks ones,
    signed with its secret, and with its previous secret too until
    ``previous_secret_until`` (by the attempt's ``timestamp``)."""
    secrets = sink.signing_secrets(datetime.fromtimestamp(timestamp, UTC))
    return events.webhook_headers(
        delivery,
        body,
        timestamp,
        key=_secret_key(secrets[0]) if secrets else None,
        extra={name: value.get_secret_value() for name, value in sink.headers.items()},
        previous_key=_secret_key(secrets[1]) if len(secrets) > 1 else None,
    )


@dataclass(frozen=True)
class Sent:
    """What one POST got: its status (None when none came back) or the error, and time."""

    started_at: datetime
    duration_ms: int
    status: int | None
    error: str | None  # None: a 2xx came back
    retry_after: float | None
    answer: str | None = None  # the start of the receiver's answer (RESPONSE_BODY_KEPT)


async def send(
    session: aiohttp.ClientSession,
    sink: Sink,
    delivery: DueDelivery,
    *,
    clock: Callable[[], datetime],
) -> Sent:
    """POST ``delivery`` to ``sink`` once (its body and signed headers, within its
    timeout); never raises. ``check``'s test event is sent this way; ``attempt`` takes
    the same values as a tuple (one object less per delivery)."""
    return Sent(*await _post(session, sink, delivery, clock))


async def _post(
    session: aiohttp.ClientSession,
    sink: Sink,
    delivery: DueDelivery,
    clock: Callable[[], datetime],
) -> tuple[datetime, int, int | None, str | None, float | None, str | None]:
    """:func:`send`'s work: (started_at, duration_ms, status, error, retry_after, answer)."""
    body = body_for(sink, delivery)
    started_at = clock()
    headers = headers_for(sink, delivery, body, int(started_at.timestamp()))
    status: int | None = None
    error: str | None = None
    retry_after: float | None = None
    answer: str | None = None
    t0 = time.perf_counter()
    try:
        async with session.post(
            sink.url,
            data=body,
            headers=headers,
            timeout=_client_timeout(sink.timeout),
            allow_redirects=False,
        ) as response:
            status = response.status
            if not 200 <= status < 300:  # a 2xx has nothing to retry
                retry_after = parse_retry_after(response.headers.get("retry-after"), started_at)
            answer = response_text(await response.content.read(MAX_RESPONSE))
    except Exception as exc:  # anything still ends as a recorded, retried attempt
        # one sentence by host and port (a sink URL may carry a token: never quoted)
        error = describe(exc, sink.url, sink.timeout)
    duration_ms = int((time.perf_counter() - t0) * 1000)
    if status is not None and not 200 <= status < 300:
        error = http_error(status)
    return started_at, duration_ms, status, error, retry_after, answer


async def attempt(
    session: aiohttp.ClientSession,
    sink: Sink,
    delivery: DueDelivery,
    *,
    clock: Callable[[], datetime],
    rand: Callable[[], float],
) -> AttemptOutcome:
    """POST ``delivery`` to ``sink`` once and decide what follows; never raises."""
    started_at, duration_ms, status, error, retry_after, answer = await _post(
        session, sink, delivery, clock
    )
    return outcome(
        sink,
        delivery,
        started_at=started_at,
        duration_ms=duration_ms,
        status=status,
        error=error,
        retry_after=retry_after,
        clock=clock,
        rand=rand,
        response_body=answer,
    )


def response_text(data: bytes) -> str:
    """The start of a receiver's answer as it is kept: its first ``RESPONSE_BODY_KEPT``
    bytes as UTF-8, an undecodable byte (or a character cut at the end) replaced by U+FFFD
    and NUL too (PostgreSQL's text refuses it). Control characters stay: they are escaped
    where the text is printed."""
    if not data:  # no answer (a 204, say): the common case
        return ""
    return data[:RESPONSE_BODY_KEPT].decode("utf-8", "replace").replace("\x00", "\ufffd")


def outcome(
    sink: Sink,
    delivery: DueDelivery,
    *,
    started_at: datetime,
    duration_ms: int,
    status: int | None,
    error: str | None,
    retry_after: float | None,
    clock: Callable[[], datetime],
    rand: Callable[[], float],
    response_body: str | None = None,
) -> AttemptOutcome:
    """What an attempt's result means for its delivery (:func:`core.retry.decide`), logged."""
    number = delivery.attempts + 1
    if status is not None and 200 <= status < 300:
        # delivered, as decide() says first: the common case, without the policy's objects
        # (a third of this function's cost per delivery; benchmarks/RESULTS.md)
        if log.enabled_for(logging.DEBUG):
            log.debug(
                "delivery.ok",
                sink=sink.name,
                event_id=delivery.event_id,
                attempt=number,
                status=status,
                duration_ms=duration_ms,
            )
        # positional, in the fields' order (the common case: one per delivery)
        return AttemptOutcome(
            delivery.id,
            sink.name,
            delivery.event_id,
            number,
            started_at,
            duration_ms,
            status,
            error,
            DeliveryStatus.DELIVERED,
            None,
            None,
            response_body,
        )
    # early probes of a sink that was down do not use up the schedule (core/circuit.py)
    decision = decide(
        RetryPolicy(schedule=sink.retry.schedule),
        attempts=number - delivery.probes,
        status=status,
        retry_after=retry_after,
        rand=rand,
    )
    context = {
        "sink": sink.name,
        "event_id": delivery.event_id,
        "attempt": number,
        "status": status,
        "duration_ms": duration_ms,
    }
    next_at: datetime | None = None
    disable: str | None = None
    early_probe = False
    if decision.verdict is Verdict.DELIVERED:
        new_status = DeliveryStatus.DELIVERED
        log.debug("delivery.ok", **context)
    elif decision.verdict is Verdict.GONE:
        # the sink is disabled; this delivery is held with the others, due at once when
        # the sink is enabled again (recorded failed here, held in the same transaction)
        new_status = DeliveryStatus.FAILED
        next_at = clock()
        disable = "the receiver answered 410 Gone"
        log.error("sink.disabled", **context, reason=disable, held_until="sinks enable")
    elif delivery.early:
        # a probe sent before this delivery's own retry was due: its schedule stays
        new_status = DeliveryStatus.FAILED
        next_at = delivery.next_attempt_at or clock()
        early_probe = True
        log.info("delivery.probe_failed", **context, error=error)
    elif decision.verdict is Verdict.RETRY:
        assert decision.delay is not None
        new_status = DeliveryStatus.FAILED
        next_at = clock() + timedelta(seconds=decision.delay)
        log.warning("delivery.retry", **context, error=error, retry_in=f"{decision.delay:.1f}s")
    else:
        new_status = DeliveryStatus.DEAD
        # the one place a delivery dies: what an operational event hooks onto
        log.error("delivery.dead", **context, error=error, replay="replay --event ID")
    return AttemptOutcome(
        delivery_id=delivery.id,
        sink=sink.name,
        event_id=delivery.event_id,
        attempt=number,
        started_at=started_at,
        duration_ms=duration_ms,
        status_code=status,
        error=error,
        new_status=new_status,
        next_attempt_at=next_at,
        disable_sink=disable,
        early_probe=early_probe,
        response_body=response_body,
    )
