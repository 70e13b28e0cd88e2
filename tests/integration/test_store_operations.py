"""Replay, backfill, event listing, retention and pause, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from trigger_engine.core.dedupe import key_items
from trigger_engine.db.schema import attempts, deliveries, events, seen_keys
from trigger_engine.db.store import Store
from trigger_engine.types import AttemptOutcome, EventFilter

T0 = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
SINKS = ("crm", "ops")


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    s = Store.open(db_url)
    yield s
    s.close()


def items(*ids: str) -> list[dict[str, Any]]:
    return [{"id": i} for i in ids]


def poll(
    store: Store,
    ids: list[str],
    *,
    now: datetime = T0,
    account: str = "acme",
    trigger: str = "leads",
    event_type: str = "lead.new",
) -> None:
    store.polls.record(
        account,
        trigger,
        key_items(items(*ids), ["id"]),
        event_type=event_type,
        emit_first=False,
        sinks=list(SINKS),
        now=now,
    )


def count(store: Store, table: Any, *where: Any) -> int:
    with store.db.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one())


def deliver_all(store: Store, now: datetime, status: str = "delivered", code: int = 200) -> None:
    claimed = store.deliveries.claim_due(
        owner="n", now=now, lease=60, capacity={s: 100 for s in SINKS}
    )
    store.deliveries.record_attempts(
        [
            AttemptOutcome(
                d.id,
                d.sink,
                d.event_id,
                d.attempts + 1,
                now,
                5,
                code,
                None if code == 200 else f"HTTP {code}",
                status,
            )
            for d in claimed
        ],
        owner="n",
    )


@pytest.fixture
def history(store: Store) -> Store:
    """Three events for acme (two leads at T0, one campaign at T0+1h), one for globex."""
    poll(store, [])
    poll(store, [], trigger="campaigns", event_type="campaign.new")
    poll(store, [], account="globex")
    poll(store, ["b", "a"], now=T0)
    poll(store, ["c1"], now=T0 + timedelta(hours=1), trigger="campaigns", event_type="campaign.new")
    poll(store, ["g"], now=T0 + timedelta(hours=2), account="globex")
    return store


def test_events_are_listed_newest_first_with_every_delivery(history: Store) -> None:
    found = history.events.list(EventFilter(), limit=10)
    assert [e.item_key for e in found] == ["g", "c1", "b", "a"]
    assert [d.sink for d in found[0].deliveries] == ["crm", "ops"]
    assert [e.item_key for e in history.events.list(EventFilter(), limit=2)] == ["g", "c1"]


@pytest.mark.parametrize(
    ("selection", "keys"),
    [
        (EventFilter(types=("campaign.new",)), ["c1"]),
        (EventFilter(accounts=("globex",)), ["g"]),
        (EventFilter(since=T0 + timedelta(minutes=30)), ["g", "c1"]),
        (EventFilter(until=T0 + timedelta(minutes=30)), ["b", "a"]),
        (EventFilter(item_key="a"), ["a"]),
        (EventFilter(statuses=("delivered",)), []),
    ],
)
def test_event_filters(history: Store, selection: EventFilter, keys: list[str]) -> None:
    assert [e.item_key for e in history.events.list(selection, limit=10)] == keys


def test_replay_requeues_with_the_same_event_and_a_fresh_history(history: Store) -> None:
    later = T0 + timedelta(hours=3)
    deliver_all(history, later)
    (a,) = history.events.list(EventFilter(item_key="a"), limit=1)
    dry = history.deliveries.replay(
        EventFilter(event_ids=(a.id,)), known_sinks=SINKS, now=later, dry_run=True
    )
    assert (dry.events, dry.queued) == (1, 2)
    assert count(history, deliveries, deliveries.c.status == "pending") == 0  # dry: untouched
    result = history.deliveries.replay(
        EventFilter(event_ids=(a.id,), sinks=("crm",)), known_sinks=SINKS, now=later, dry_run=False
    )
    assert (result.events, result.queued) == (1, 1)
    (again,) = history.deliveries.claim_due(
        owner="n", now=later, lease=60, capacity={"crm": 5, "ops": 5}
    )
    assert (again.event_id, again.sink, again.attempts) == (a.id, "crm", 0)
    assert count(history, attempts) == 7  # the replayed delivery's attempt is gone


def test_replay_skips_disabled_unknown_and_in_flight_deliveries(history: Store) -> None:
    history.sinks.set_enabled("ops", False, reason="410", now=T0)
    history.deliveries.claim_due(
        owner="n", now=T0, lease=600, capacity={"crm": 1}
    )  # "a" to crm: in flight
    result = history.deliveries.replay(
        EventFilter(accounts=("acme",)), known_sinks=("crm",), now=T0, dry_run=False
    )
    assert (result.queued, result.skipped_unknown, result.skipped_in_flight) == (2, 3, 1)
    assert result.skipped_disabled == 0  # ops is unknown to this config: counted as such
    result = history.deliveries.replay(
        EventFilter(accounts=("acme",)), known_sinks=SINKS, now=T0, dry_run=True
    )
    assert result.skipped_disabled == 3


def test_replay_by_status_touches_only_those(history: Store) -> None:
    later = T0 + timedelta(hours=3)
    deliver_all(history, later, status="dead", code=500)
    poll(history, ["z", "b", "a"], now=later)
    result = history.deliveries.replay(
        EventFilter(statuses=("dead",)), known_sinks=SINKS, now=later, dry_run=False
    )
    assert result.queued == 8
    assert count(history, deliveries, deliveries.c.status == "pending") == 10


def test_backfill_fires_remembered_items_once(store: Store) -> None:
    poll(store, ["c", "b", "a"])  # seed: remembered, not fired
    poll(store, ["d", "c", "b", "a"])  # d fires normally
    listed = key_items(items("d", "c", "b"), ["id"])  # "a" is no longer listed
    dry = store.polls.backfill(
        "acme", "leads", listed, event_type="lead.new", sinks=["crm"], now=T0, dry_run=True
    )
    assert (dry.fired, dry.not_listed) == (2, 1)
    assert count(store, events) == 1
    done = store.polls.backfill(
        "acme", "leads", listed, event_type="lead.new", sinks=["crm"], now=T0, dry_run=False
    )
    assert (done.fired, done.deliveries) == (2, 2)
    keys = [e.item_key for e in store.events.list(EventFilter(), limit=10)]
    assert keys == ["c", "b", "d"]  # newest first: "b" (older upstream) fired before "c"
    again = store.polls.backfill(
        "acme", "leads", listed, event_type="lead.new", sinks=["crm"], now=T0, dry_run=False
    )
    assert (again.fired, again.not_listed) == (0, 1)
    assert count(store, seen_keys, seen_keys.c.seeded) == 1


def test_prune_removes_only_old_fully_delivered_events(history: Store) -> None:
    later = T0 + timedelta(days=40)
    claimed = history.deliveries.claim_due(
        owner="n", now=later, lease=60, capacity={"crm": 100, "ops": 100}
    )
    outcomes = []
    for d in claimed:  # everything delivered except "b" to ops, which is dead
        dead = (
            d.sink == "ops"
            and d.event_id == history.events.list(EventFilter(item_key="b"), limit=1)[0].id
        )
        outcomes.append(
            AttemptOutcome(
                d.id,
                d.sink,
                d.event_id,
                1,
                later,
                5,
                500 if dead else 200,
                None,
                "dead" if dead else "delivered",
            )
        )
    history.deliveries.record_attempts(outcomes, owner="n")
    # the dead delivery wrote an engine.delivery_dead event (to no sink: none subscribes)
    (alert,) = history.events.list(EventFilter(types=("engine.delivery_dead",)), limit=10)
    assert (alert.account, alert.deliveries) == ("acme", ())
    pruned = history.events.prune(T0 + timedelta(minutes=90))
    assert pruned == 2  # "a" and "c1": old and delivered; "b" has a dead delivery; "g" is new
    remaining = [e.item_key for e in history.events.list(EventFilter(), limit=10)]
    assert remaining == [alert.id, "g", "b"]  # the alert is new (created at the attempt)
    assert count(history, attempts) == 4
    assert count(history, seen_keys) == 4  # seen keys are never pruned


def test_pause_keeps_the_seen_set_and_resume_clears_backoff(store: Store) -> None:
    poll(store, ["a"])
    store.polls.record_failure(
        "acme",
        "leads",
        outcome="transient",
        error="HTTP 500",
        backoff_until=T0 + timedelta(hours=1),
        now=T0,
    )
    store.polls.set_paused("acme", "leads", paused=True, reason="by hand")
    state = store.polls.state("acme", "leads")
    assert state is not None and (state.paused, state.paused_reason, state.items_known) == (
        True,
        "by hand",
        1,
    )
    store.polls.set_paused("acme", "leads", paused=False, reason=None)
    state = store.polls.state("acme", "leads")
    assert state is not None
    assert (state.paused, state.backoff_until, state.consecutive_failures) == (False, None, 0)
    assert state.seeded_at is not None


def test_sink_stats_count_by_status(history: Store) -> None:
    deliver_all(history, T0 + timedelta(hours=3))
    poll(history, ["n", "b", "a"], now=T0 + timedelta(hours=4))
    stats = history.sinks.stats()
    assert stats["crm"].counts == {"pending": 1, "failed": 0, "delivered": 4, "dead": 0, "held": 0}
    assert stats["crm"].oldest_due_created_at == T0 + timedelta(hours=4)
    assert stats["crm"].last_success_at == T0 + timedelta(hours=3)
