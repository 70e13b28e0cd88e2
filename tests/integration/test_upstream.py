"""An upstream you cannot trust: pagination, updated items, the flood guard and the
sustained-failure rule, through the real store with the API faked by MockTransport."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from freezegun import freeze_time
from sqlalchemy import select

from tests.integration.test_poller import Upstream, count, make_config, poller_for
from trigger_engine.db.schema import deliveries, events
from trigger_engine.db.store import Store
from trigger_engine.types import EventFilter

T0 = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)


@pytest.fixture
def upstream() -> Upstream:
    return Upstream()


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    s = Store.open(db_url)
    yield s
    s.close()


def paged(records: list[dict[str, Any]], first_page: int = 1):  # type: ignore[no-untyped-def]
    """A page-number API over ``records`` (newest first)."""

    def reply(request: httpx.Request) -> httpx.Response:
        page = int(request.url.params["page"]) - first_page
        size = int(request.url.params["per_page"])
        return httpx.Response(200, json={"actions": records[page * size : (page + 1) * size]})

    return reply


def leads(n: int, prefix: str = "L") -> list[dict[str, Any]]:
    return [{"id": f"{prefix}{i:03d}", "status": "new"} for i in range(n)]


PAGINATED = {
    "new_leads": {
        "path": "/new-leads",
        "key": "id",
        "event": "lead.new",
        "interval": "5m",
        "items_path": "actions",
        "pagination": {"per_page": 10, "max_pages": 50},
    }
}


def test_the_first_poll_reads_every_page_then_later_polls_stop_at_a_known_page(
    db_url: str, store: Store, upstream: Upstream
) -> None:
    config = make_config(db_url, PAGINATED)
    poller = poller_for(config, store, upstream)
    account, trigger = config.accounts[0], config.triggers["new_leads"]
    records = leads(35)
    upstream.reply = paged(records)
    first = poller.poll(account, trigger)
    assert (first.items, first.remembered, len(upstream.requests)) == (35, 35, 4)
    upstream.requests.clear()
    records[:0] = leads(12, prefix="N")  # 12 new ones, newest first
    second = poller.poll(account, trigger)
    # page 1: 10 new; page 2: 2 new + 8 known; page 3: all known → stop there
    assert [r.url.params["page"] for r in upstream.requests] == ["1", "2", "3"]
    assert second.new_events == 12


def test_zero_based_pages_and_custom_parameter_names(
    db_url: str, store: Store, upstream: Upstream
) -> None:
    triggers = {
        "new_leads": {
            **PAGINATED["new_leads"],
            "pagination": {
                "page_param": "p",
                "per_page_param": "n",
                "per_page": 5,
                "first_page": 0,
            },
        }
    }
    config = make_config(db_url, triggers)
    records = leads(7)

    def reply(request: httpx.Request) -> httpx.Response:
        page, size = int(request.url.params["p"]), int(request.url.params["n"])
        return httpx.Response(200, json={"actions": records[page * size : (page + 1) * size]})

    upstream.reply = reply
    report = poller_for(config, store, upstream).poll(
        config.accounts[0], config.triggers["new_leads"]
    )
    assert report.items == 7
    assert [r.url.params["p"] for r in upstream.requests] == ["0", "1"]


def test_a_server_that_repeats_the_same_page_forever_is_stopped(
    db_url: str, store: Store, upstream: Upstream
) -> None:
    config = make_config(db_url, PAGINATED)
    upstream.reply = lambda _r: httpx.Response(200, json={"actions": leads(10)})
    report = poller_for(config, store, upstream).poll(
        config.accounts[0], config.triggers["new_leads"]
    )
    assert report.ok and report.items == 10
    assert len(upstream.requests) == 2  # the second page equals the first: stop


def test_the_page_cap_is_a_hard_stop(db_url: str, store: Store, upstream: Upstream) -> None:
    triggers = {
        "new_leads": {**PAGINATED["new_leads"], "pagination": {"per_page": 2, "max_pages": 3}}
    }
    config = make_config(db_url, triggers)
    counter = iter(range(10_000))
    upstream.reply = lambda _r: httpx.Response(
        200, json={"actions": [{"id": f"x{next(counter)}"}, {"id": f"x{next(counter)}"}]}
    )
    report = poller_for(config, store, upstream).poll(
        config.accounts[0], config.triggers["new_leads"]
    )
    assert (report.items, len(upstream.requests)) == (6, 3)


def test_a_failure_on_a_later_page_fails_the_whole_poll(
    db_url: str, store: Store, upstream: Upstream
) -> None:
    config = make_config(db_url, PAGINATED)
    records = leads(25)
    good = paged(records)
    upstream.reply = lambda r: httpx.Response(502) if r.url.params["page"] == "2" else good(r)
    report = poller_for(config, store, upstream).poll(
        config.accounts[0], config.triggers["new_leads"]
    )
    assert not report.ok and "page=2" in (report.error or "")
    assert store.polls.state("acme", "new_leads").seeded_at is None  # type: ignore[union-attr]


def test_a_changed_status_fires_exactly_one_lead_updated(
    db_url: str, store: Store, upstream: Upstream
) -> None:
    config = make_config(db_url, {"leads": {}, "lead_updates": {}})
    poller = poller_for(config, store, upstream)
    account = config.accounts[0]
    records = [
        {"id": "A", "status": "approved", "last_action": {"key": 1}, "tags": []},
        {"id": "B", "status": "approved", "last_action": {"key": 2}, "tags": []},
    ]
    upstream.reply = lambda _r: httpx.Response(200, json=records)
    for name in ("leads", "lead_updates"):
        assert poller.poll(account, config.triggers[name]).first_poll
    # B's status changes, A gets a new tag (not watched), C is a new lead
    records[1] = {**records[1], "status": "replied"}
    records[0] = {**records[0], "tags": ["vip"]}
    records.insert(0, {"id": "C", "status": "new", "last_action": {"key": 3}, "tags": []})
    updates = poller.poll(account, config.triggers["lead_updates"])
    new = poller.poll(account, config.triggers["leads"])
    assert (updates.new_events, new.new_events) == (1, 1)
    found = {(e.type, e.item_key) for e in store.events.list(EventFilter(), limit=10)}
    assert found == {("lead.updated", "B"), ("lead.new", "C")}
    # polled again without change: nothing; a second change of B: one more
    assert poller.poll(account, config.triggers["lead_updates"]).new_events == 0
    records[2] = {**records[2], "last_action": {"key": 99}}
    assert poller.poll(account, config.triggers["lead_updates"]).new_events == 1


def test_the_flood_guard_holds_every_event_of_an_oversized_poll(
    db_url: str, store: Store, upstream: Upstream
) -> None:
    config = make_config(db_url, {"leads": {"max_new_per_poll": 5}})
    poller = poller_for(config, store, upstream)
    account, trigger = config.accounts[0], config.triggers["leads"]
    records: list[dict[str, Any]] = []
    upstream.reply = lambda _r: httpx.Response(200, json=records)
    poller.poll(account, trigger)
    records[:0] = leads(3, prefix="a")
    assert poller.poll(account, trigger).held == 0
    records[:0] = leads(8, prefix="b")
    flood = poller.poll(account, trigger)
    assert (flood.new_events, flood.held) == (8, 8)
    with store.db.engine.connect() as conn:
        statuses = sorted(conn.execute(select(deliveries.c.status)).scalars())
    assert statuses == ["held"] * 8 + ["pending"] * 3
    assert count(store, events) == 11  # held, never dropped
    held = store.events.list(EventFilter(statuses=("held",)), limit=100)
    assert len(held) == 8 and "max_new_per_poll = 5" in (held[0].deliveries[0].last_error or "")
    released = store.deliveries.replay(
        EventFilter(statuses=("held",)), known_sinks=["crm"], now=T0, dry_run=False
    )
    assert released.queued == 8


def test_sustained_failures_pause_the_trigger_and_a_restart_resumes_it(
    db_url: str, store: Store, upstream: Upstream
) -> None:
    config = make_config(
        db_url, {"leads": {"pause_after": "1d", "pause_after_failures": 3, "interval": "1h"}}
    )
    poller = poller_for(config, store, upstream)
    account, trigger = config.accounts[0], config.triggers["leads"]
    poller.poll(account, trigger)
    upstream.reply = lambda _r: httpx.Response(401)
    moments = [T0, T0 + timedelta(hours=6), T0 + timedelta(hours=12), T0 + timedelta(hours=25)]
    paused_after = []
    for moment in moments:
        with freeze_time(moment):
            poller.poll(account, trigger)
        state = store.polls.state("acme", "leads")
        assert state is not None
        paused_after.append(state.paused)
    # 3 failures within 12 h: not yet (less than a day); the 4th, 25 h after the first: paused
    assert paused_after == [False, False, False, True]
    assert state.paused_auto and "4 polls in a row failed since 2026-11-27T10:00:00Z" in (
        state.paused_reason or ""
    )
    assert "api_key=***" in (state.paused_reason or "")
    assert state.items_known == 0  # the seen set (empty first poll) is kept as it was
    assert store.polls.resume_auto_paused() == [("acme", "leads")]
    state = store.polls.state("acme", "leads")
    assert state is not None and not state.paused and state.failing_since is None
    # a pause by hand survives a restart
    store.polls.set_paused("acme", "leads", paused=True, reason="by hand")
    assert store.polls.resume_auto_paused() == []


def test_a_trigger_that_succeeds_now_and_then_is_never_paused(
    db_url: str, store: Store, upstream: Upstream
) -> None:
    config = make_config(db_url, {"leads": {"pause_after": "1h", "pause_after_failures": 3}})
    poller = poller_for(config, store, upstream)
    account, trigger = config.accounts[0], config.triggers["leads"]
    for hour in range(12):
        fail = hour % 3 != 0  # two failures, then a success, over and over
        upstream.reply = (
            (lambda _r: httpx.Response(500)) if fail else (lambda _r: httpx.Response(200, json=[]))
        )
        with freeze_time(T0 + timedelta(hours=hour)):
            poller.poll(account, trigger)
    state = store.polls.state("acme", "leads")
    assert state is not None and not state.paused
