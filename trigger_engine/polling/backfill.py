"""Backfill: fire, once, the listed items that a seeding first poll only remembered.

For each selected (account, trigger) it fetches the list as a poll would, keys it, and
lets the store fire the remembered keys among them (each at most once: the flag is flipped
in the same transaction as the events are written). Items the API no longer lists cannot
be fired and are only counted. Its events go to the sinks of the configuration and to
those that other live nodes serve (the node registry, read once at the start), as a
poll's do.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from datetime import datetime

from trigger_engine.config import Account, Config, TriggerSettings
from trigger_engine.core.dedupe import key_items
from trigger_engine.core.registry import served_by_live
from trigger_engine.db.store import Store
from trigger_engine.errors import SourceError
from trigger_engine.polling.poller import subscribed_sinks
from trigger_engine.polling.source import Source
from trigger_engine.types import BackfillResult


@dataclass(frozen=True)
class BackfillStep:
    """One (account, trigger) of a backfill: what it fired, or why its fetch failed."""

    account: Account
    trigger: TriggerSettings
    result: BackfillResult | None
    error: SourceError | None = None


def backfill(
    config: Config,
    store: Store,
    source: Source,
    *,
    accounts: Collection[str],
    triggers: Collection[str],
    dry_run: bool,
    clock: Callable[[], datetime],
) -> Iterator[BackfillStep]:
    """Backfill every configured (account, trigger), or only those named; one step each,
    as it is done."""
    moment = clock()
    remote = served_by_live(store.nodes.live(moment), moment)
    for account in config.accounts:
        if accounts and account.name not in accounts:
            continue
        for trigger in config.triggers.values():
            if triggers and trigger.name not in triggers:
                continue
            try:
                items = source.fetch(account, trigger)
            except SourceError as exc:
                yield BackfillStep(account, trigger, None, exc)
                continue
            result = store.polls.backfill(
                account.name,
                trigger.name,
                key_items(items, trigger.key),
                event_type=trigger.event,
                sinks=subscribed_sinks(config, trigger.event, remote),
                now=clock(),
                dry_run=dry_run,
            )
            yield BackfillStep(account, trigger, result)
