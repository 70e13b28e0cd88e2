"""One poll of one trigger for one account: source → keys → store, and its report.

A failed poll changes nothing in the store but the poll's own state (its outcome, its
consecutive failures and the backoff they earn); a successful one goes through the
store's outbox transaction (seen keys, events and deliveries together).

An event gets a delivery for each sink of this node's configuration that subscribes to
it, and for each that another live node serves and subscribes to it (``remote_sinks``,
the node registry as the daemon's last heartbeat read it: ``core/registry.py``), so that
nodes whose configurations differ for a while lose no event.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any

from trigger_engine.clock import isoformat_z
from trigger_engine.clock import now as clock_now
from trigger_engine.config import Account, Config, TriggerSettings
from trigger_engine.config.shape import served_sinks
from trigger_engine.core.dedupe import key_items, keyless_failure
from trigger_engine.core.definition import (
    DefinitionPrint,
    changed_parts,
    definition_print,
    redefined,
)
from trigger_engine.core.registry import fan_out
from trigger_engine.core.retry import MAX_POLL_BACKOFF, STORE_BACKOFF_CAP, poll_backoff
from trigger_engine.db.store import Store
from trigger_engine.errors import DatabaseError, LeaseLost, SourceError
from trigger_engine.ops.logs import get_logger
from trigger_engine.polling.gc_pause import gc_paused
from trigger_engine.polling.source import Source
from trigger_engine.states import PollOutcome
from trigger_engine.types import Fence, PollReport, PollState, SinkSubscriptions

log = get_logger("trigger_engine.poll")


# A trigger that knows fewer items than this, and has had its first poll, polls with the
# cyclic GC left on: its lists are small, and the GC is process-wide (see gc_pause).
GC_HOLD_MIN_ITEMS = 1000


def may_be_large(state: PollState | None) -> bool:
    """Whether a poll may parse a large list: its first (size unknown) or one of a
    trigger that knows at least ``GC_HOLD_MIN_ITEMS`` items."""
    return state is None or state.seeded_at is None or state.items_known >= GC_HOLD_MIN_ITEMS


def definition_of(trigger: TriggerSettings) -> DefinitionPrint:
    """The fingerprint of ``trigger``'s dedupe definition (core/definition.py)."""
    return definition_print(
        path=trigger.path,
        key=trigger.key,
        items_path=trigger.items_path,
        params=trigger.params,
        update_fields=trigger.update_fields,
    )


def first_poll(state: PollState | None, definition: DefinitionPrint) -> bool:
    """Whether a poll from ``state`` is a first poll: the trigger never had a successful
    one, or its definition changed since (a re-seed)."""
    return (
        state is None
        or state.seeded_at is None
        or redefined(state.definition_fingerprint, definition)
    )


NO_REMOTE_SINKS: SinkSubscriptions = MappingProxyType({})


def subscribed_sinks(
    config: Config, event_type: str, remote: SinkSubscriptions = NO_REMOTE_SINKS
) -> list[str]:
    """The names of the sinks that receive ``event_type``: those of ``config``, then those
    that other live nodes serve (``remote``: see the module)."""
    return fan_out(served_sinks(config), remote, event_type)


class Poller:
    """Polls one (account, trigger) at a time: fetch, key, record (see the module)."""

    def __init__(
        self,
        config: Config,
        store: Store,
        source: Source,
        *,
        clock: Callable[[], datetime] = clock_now,
        rand: Callable[[], float] = random.random,
        remote_sinks: Callable[[], SinkSubscriptions] = lambda: NO_REMOTE_SINKS,
    ) -> None:
        self.config = config
        self.store = store
        self.source = source
        self.clock = clock
        self.rand = rand
        self.remote_sinks = remote_sinks

    def poll(
        self,
        account: Account,
        trigger: TriggerSettings,
        *,
        fence: Fence | None = None,
        state: PollState | None = None,
    ) -> PollReport:
        """One poll. With ``fence`` (a poll lease), its result is written only while that
        lease still holds; otherwise the report says ``lease_lost`` and nothing changed.
        ``state``: the trigger's state as its claim saw it (else it is read here)."""
        started = time.perf_counter()
        try:
            try:
                if state is None:
                    state = self.store.polls.state(account.name, trigger.name)
                # A poll that may parse and key a large list holds the cyclic GC
                # (gc_pause); the small polls of a busy schedule leave it alone.
                with gc_paused() if may_be_large(state) else contextlib.nullcontext():
                    return self._poll(account, trigger, fence, state)
            except DatabaseError as exc:  # the store failed the poll: nothing was written
                took = time.perf_counter() - started
                return self._failed(
                    account, trigger, PollOutcome.STORE, str(exc), None, took, fence, state
                )
        except LeaseLost as exc:
            log.warning("poll.lease_lost", account=account.name, trigger=trigger.name)
            return PollReport(
                account=account.name,
                trigger=trigger.name,
                ok=True,
                outcome=PollOutcome.LEASE_LOST,
                error=str(exc),
            )

    def _poll(
        self,
        account: Account,
        trigger: TriggerSettings,
        fence: Fence | None,
        state: PollState | None,
    ) -> PollReport:
        started = time.perf_counter()
        definition = definition_of(trigger)
        first = first_poll(state, definition)
        see_everything = first or trigger.update_fields is not None

        def keep_going(page: list[Any]) -> bool:
            """Follow the next page only while this one had something unseen."""
            if see_everything:
                return True
            keys = key_items(page, trigger.key).keys
            return len(self.store.seen.known_keys(account.name, trigger.name, keys)) < len(keys)

        try:
            items = self.source.fetch(account, trigger, keep_going=keep_going)
        except SourceError as exc:
            outcome, duration = PollOutcome(exc.kind), time.perf_counter() - started
            return self._failed(
                account, trigger, outcome, str(exc), exc.retry_after, duration, fence, state
            )
        keyed = key_items(items, trigger.key, trigger.update_fields)
        refused = keyless_failure(keyed, items, trigger.key, first_poll=first)
        if refused is not None:  # a wrong key: seeding would remember nothing (see core)
            error = (
                f"account '{account.name}', trigger '{trigger.name}': {refused}; nothing was "
                f"remembered or fired (is triggers.{trigger.name}.key right?)"
            )
            duration = time.perf_counter() - started
            return self._failed(
                account, trigger, PollOutcome.KEYLESS, error, None, duration, fence, state
            )
        if keyed.keyless:
            log.warning(
                "poll.items_without_key",
                account=account.name,
                trigger=trigger.name,
                skipped=keyed.keyless,
                field=keyed.keyless_field,
            )
        result = self.store.polls.record(
            account.name,
            trigger.name,
            keyed,
            event_type=trigger.event,
            emit_first=trigger.on_first_poll == "emit",
            sinks=subscribed_sinks(self.config, trigger.event, self.remote_sinks()),
            now=self.clock(),
            max_new=trigger.max_new_per_poll,
            fence=fence,
            definition=definition,
        )
        if result.redefined_from is not None:
            log.warning(
                "poll.definition_changed",
                account=account.name,
                trigger=trigger.name,
                old=DefinitionPrint.decode(result.redefined_from).digest,
                new=definition.digest,
                changed=",".join(changed_parts(result.redefined_from, definition)) or "unknown",
                remembered=result.remembered,
                new_events=result.new_events,
            )
        report = PollReport(
            account=account.name,
            trigger=trigger.name,
            ok=True,
            outcome=PollOutcome.OK,
            first_poll=result.first_poll,
            items=len(items),
            new_events=result.new_events,
            remembered=result.remembered,
            held=result.held,
            duplicates=keyed.duplicates,
            keyless=keyed.keyless,
            quarantined=result.quarantined,
            duration=time.perf_counter() - started,
            redefined=result.redefined_from is not None,
        )
        for key, reason in result.newly_quarantined:  # once per item, not once per poll
            log.warning(
                "item.quarantined", account=account.name, trigger=trigger.name, key=key, why=reason
            )
        if result.released:
            log.info(
                "item.released", account=account.name, trigger=trigger.name, items=result.released
            )
        if result.held:
            log.warning(
                "poll.flood_held",
                account=account.name,
                trigger=trigger.name,
                held=result.held,
                max_new_per_poll=trigger.max_new_per_poll,
            )
        elif result.first_poll:
            log.info(
                "poll.first",
                account=account.name,
                trigger=trigger.name,
                mode=trigger.on_first_poll,
                remembered=result.remembered,
                new_events=result.new_events,
            )
        elif result.new_events:
            log.info(
                "poll.new_items",
                account=account.name,
                trigger=trigger.name,
                new_events=result.new_events,
                items=len(items),
            )
        else:
            log.debug("poll.nothing_new", account=account.name, trigger=trigger.name)
        return report

    def _failed(
        self,
        account: Account,
        trigger: TriggerSettings,
        outcome: PollOutcome,
        error: str,
        retry_after: float | None,
        duration: float,
        fence: Fence | None,
        state: PollState | None,
    ) -> PollReport:
        """Record a failed poll: backoff, the sustained-failure pause and the operational
        events ``engine.trigger_failing`` / ``engine.trigger_paused``, written with it (never
        for the store's failures: pausing would not fix our own database)."""
        at = self.clock()
        failures = (state.consecutive_failures if state else 0) + 1
        delay = poll_backoff(
            failures=failures,
            interval=trigger.interval,
            retry_after=retry_after,
            rand=self.rand,
            cap=STORE_BACKOFF_CAP if outcome is PollOutcome.STORE else MAX_POLL_BACKOFF,
        )
        report = PollReport(
            account=account.name,
            trigger=trigger.name,
            ok=False,
            outcome=outcome,
            error=error,
            duration=duration,
        )
        upstream = outcome is not PollOutcome.STORE  # our own database: no pause, no alert
        try:
            record = self.store.polls.record_failure(
                account.name,
                trigger.name,
                outcome=outcome,
                error=error,
                backoff_until=at + timedelta(seconds=delay),
                now=at,
                fence=fence,
                interval=trigger.interval if upstream else None,
                pause_after=trigger.pause_after,
                pause_after_failures=trigger.pause_after_failures if upstream else 0,
            )
        except DatabaseError as exc:  # not recorded: the report still says it (metrics, health)
            log.error(
                "poll.failed",
                account=account.name,
                trigger=trigger.name,
                kind=outcome.value,
                error=error,
                not_recorded=str(exc),
            )
            return report
        failures = record.failures
        if record.failing:
            log.error(
                "poll.failing",
                account=account.name,
                trigger=trigger.name,
                failures=failures,
                since=isoformat_z(record.since),
            )
        if record.paused_reason is not None:
            log.error(
                "poll.paused",
                account=account.name,
                trigger=trigger.name,
                reason=record.paused_reason,
            )
        log.warning(
            "poll.failed",
            account=account.name,
            trigger=trigger.name,
            kind=outcome.value,
            failures=failures,
            retry_in=f"{delay:.0f}s",
            error=error,
        )
        return report
