"""``trigger-engine check``: what a poll and a delivery would meet, tried once, stored nowhere.

For every account and enabled trigger, one request: the first page only (a paginated
trigger stops after its first page; an unpaginated one makes its one request), bounded by
``source.timeout`` and the body limits like any poll. It reports the item count, the items
without a usable key and the top-level fields of the first items, and fails where a first
poll would fail: an HTTP error, a body that is not a list of items, or most items keyless
(:func:`trigger_engine.core.dedupe.keyless_failure`).

For every sink (unless ``--no-sinks``), one ``engine.test`` event
(:func:`trigger_engine.core.events.engine_test_event`), sent as a delivery is
(:func:`trigger_engine.delivery.attempt.send`: the sink's format, its headers, signed with
its secret, within its timeout), whatever the sink's ``events`` list; a 2xx passes. Nothing
is written to the database: the event has a fresh ``webhook-id`` and no delivery row.

The requests run side by side (a few triggers at a time, every sink at once), so a check
of many triggers takes about as long as its slowest request, not their sum.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import aiohttp

from trigger_engine.clock import now as clock_now
from trigger_engine.config import Account, Config, Sink, TriggerSettings
from trigger_engine.core import events
from trigger_engine.core.dedupe import key_items, keyless_failure, top_level_fields
from trigger_engine.delivery.attempt import send
from trigger_engine.errors import SourceError
from trigger_engine.polling.source import Source
from trigger_engine.states import FailureKind
from trigger_engine.types import CheckReport, SinkCheck, TriggerCheck

# How many trigger requests run at once.
TRIGGER_WORKERS = 8


def check_trigger(source: Source, account: Account, trigger: TriggerSettings) -> TriggerCheck:
    """One request of ``trigger`` for ``account``: its first page only, judged as a first
    poll would judge it."""
    started = time.perf_counter()

    def took() -> int:
        return int((time.perf_counter() - started) * 1000)

    try:
        items = source.fetch(account, trigger, keep_going=lambda _page: False)
    except SourceError as exc:
        return TriggerCheck(
            account.name,
            trigger.name,
            trigger.key,
            ok=False,
            kind=exc.kind,
            error=str(exc),
            duration_ms=took(),
        )
    keyed = key_items(items, trigger.key)
    fields = top_level_fields(items)
    refused = keyless_failure(keyed, items, trigger.key, first_poll=True)
    return TriggerCheck(
        account.name,
        trigger.name,
        trigger.key,
        ok=refused is None,
        items=len(items),
        keyless=keyed.keyless,
        fields=fields.names,
        fields_more=fields.more,
        kind=None if refused is None else FailureKind.KEYLESS,
        error=(
            None
            if refused is None
            else f"account '{account.name}', trigger '{trigger.name}': {refused}; a first "
            f"poll would fail (is triggers.{trigger.name}.key right?)"
        ),
        duration_ms=took(),
    )


async def send_test_event(
    session: aiohttp.ClientSession, sink: Sink, clock: Callable[[], datetime]
) -> SinkCheck:
    """One signed ``engine.test`` event POSTed to ``sink`` (``check``, and the admin API's
    ``POST /api/v1/sinks/{name}/test``)."""
    event = events.engine_test_event(sink.name, clock())
    sent = await send(session, sink, event, clock=clock)
    return SinkCheck(
        sink=sink.name,
        ok=sent.error is None,
        webhook_id=event.event_id,
        status_code=sent.status,
        latency_ms=sent.duration_ms,
        error=sent.error,
    )


async def _check_sinks(sinks: tuple[Sink, ...], clock: Callable[[], datetime]) -> list[SinkCheck]:
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0)
    async with aiohttp.ClientSession(connector=connector, auto_decompress=False) as session:
        return list(await asyncio.gather(*(send_test_event(session, s, clock) for s in sinks)))


def check_sinks(config: Config, *, clock: Callable[[], datetime] = clock_now) -> list[SinkCheck]:
    """One signed ``engine.test`` event to every configured sink, side by side."""
    if not config.sinks:
        return []
    return asyncio.run(_check_sinks(tuple(config.sinks), clock))


def run_check(
    config: Config,
    *,
    sinks: bool = True,
    source: Source | None = None,
    clock: Callable[[], datetime] = clock_now,
) -> CheckReport:
    """Check every account's enabled triggers and (``sinks``) every sink (see the module).
    ``source``: the API client to use (else one is made, and closed, here)."""
    pairs = [
        (account, trigger)
        for account in config.accounts
        for trigger in config.triggers.values()
        if trigger.enabled
    ]
    problem = None if pairs else "no enabled trigger to test the API keys with"
    own = source is None
    client = Source(config.source) if source is None else source
    try:
        with ThreadPoolExecutor(max_workers=min(TRIGGER_WORKERS, len(pairs)) + 1) as pool:
            sent = pool.submit(check_sinks, config, clock=clock) if sinks else None
            trigger_checks = list(pool.map(lambda p: check_trigger(client, *p), pairs))
            sink_checks = [] if sent is None else sent.result()
    finally:
        if own:
            client.close()
    return CheckReport(
        config_path=None if config.path is None else str(config.path),
        triggers=tuple(trigger_checks),
        sinks=tuple(sink_checks),
        sinks_checked=sinks,
        problem=problem,
    )
