"""Safe first polls, through the real store on both databases (the upstream faked with
httpx.MockTransport): a first poll whose items mostly lack the key fails and seeds nothing;
a changed dedupe definition makes the next poll a first poll again."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from alembic import command
from sqlalchemy import create_engine, inspect, select, text, update

from trigger_engine.config import Config
from trigger_engine.db.migrate import alembic_config
from trigger_engine.db.schema import events, poll_state, seen_keys
from trigger_engine.db.store import Store
from trigger_engine.states import PollOutcome

from .test_poller import Upstream, count, make_config, poller_for

LEADS = [
    {"id": f"L{i}", "email": f"l{i}@x.test", "first_name": "Ann", "campaign_id": 7}
    for i in range(27)
]


@pytest.fixture
def upstream() -> Upstream:
    return Upstream()


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    with Store.open(db_url) as s:
        yield s


def leads(upstream: Upstream, items: list[Any]) -> None:
    upstream.reply = lambda _r: httpx.Response(200, json=items)


def poll(config: Config, store: Store, upstream: Upstream, trigger: str = "leads") -> Any:
    return poller_for(config, store, upstream).poll(config.accounts[0], config.triggers[trigger])


def messages(caplog: pytest.LogCaptureFixture, name: str) -> list[dict[str, Any]]:
    return [r.te_context for r in caplog.records if r.getMessage() == name]  # type: ignore[attr-defined]


def test_a_wrong_key_fails_the_first_poll_and_seeds_nothing(
    db_url: str, store: Store, upstream: Upstream
) -> None:
    """The issue's scenario: key = "uuid" on leads, 27 items without it. The poll fails
    (and backs off, and says so in status); once the key is fixed, the first poll
    remembers the 27 and fires none of them."""
    wrong = make_config(db_url, {"leads": {"key": "uuid"}})
    leads(upstream, LEADS)
    report = poll(wrong, store, upstream)
    assert (report.ok, report.outcome) == (False, PollOutcome.KEYLESS)
    assert report.error == (
        "account 'acme', trigger 'leads': 27 of 27 items have no 'uuid' (the key); their "
        "fields: campaign_id, email, first_name, id; nothing was remembered or fired "
        "(is triggers.leads.key right?)"
    )
    assert (count(store, seen_keys), count(store, events)) == (0, 0)
    state = store.polls.state("acme", "leads")
    assert state is not None
    assert (state.seeded_at, state.last_outcome, state.consecutive_failures) == (
        None,
        "keyless",
        1,
    )
    assert state.backoff_until is not None and state.last_error == report.error
    assert state.definition_fingerprint is None  # only a success stores the definition

    fixed = make_config(db_url, {"leads": {"key": "id"}})
    first = poll(fixed, store, upstream)
    assert (first.ok, first.first_poll, first.remembered, first.new_events) == (True, True, 27, 0)
    leads(upstream, [{"id": "L-new"}, *LEADS])
    later = poll(fixed, store, upstream)
    assert (later.first_poll, later.new_events) == (False, 1)


def test_a_first_poll_with_a_few_keyless_items_seeds_the_rest(
    db_url: str, store: Store, upstream: Upstream
) -> None:
    config = make_config(db_url)
    leads(upstream, [*LEADS[:5], {"name": "no id"}, {"name": "none either"}])
    report = poll(config, store, upstream)
    assert (report.ok, report.remembered, report.keyless) == (True, 5, 2)


def test_a_later_poll_fails_only_when_every_item_lacks_the_key(
    db_url: str, store: Store, upstream: Upstream
) -> None:
    config = make_config(db_url)
    leads(upstream, LEADS[:3])
    assert poll(config, store, upstream).ok
    leads(upstream, [{"id": "new"}, {"x": 1}, {"x": 2}])  # most keyless: a later poll goes on
    mostly = poll(config, store, upstream)
    assert (mostly.ok, mostly.new_events, mostly.keyless) == (True, 1, 2)
    leads(upstream, [{"x": 1}, {"x": 2}])
    none = poll(config, store, upstream)
    assert (none.ok, none.outcome) == (False, PollOutcome.KEYLESS)
    assert "2 of 2 items have no 'id'" in (none.error or "")
    leads(upstream, [])  # an empty list is not keyless
    assert poll(config, store, upstream).ok


@pytest.mark.parametrize(
    "change",
    [
        {"key": "email"},
        {"path": "/leads/v2"},
        {"params": {"status": "open"}},
    ],
    ids=["key", "path", "params"],
)
def test_a_changed_definition_re_seeds_and_says_so(
    db_url: str,
    store: Store,
    upstream: Upstream,
    change: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    before = make_config(db_url)
    leads(upstream, LEADS[:10])
    assert poll(before, store, upstream).first_poll
    after = make_config(db_url, {"leads": change})
    leads(upstream, LEADS[:12])  # two new items arrived meanwhile: remembered, not fired
    with caplog.at_level(logging.INFO):
        again = poll(after, store, upstream)
    assert (again.ok, again.first_poll, again.redefined, again.new_events) == (
        True,
        True,
        True,
        0,
    )
    assert count(store, events) == 0
    (logged,) = messages(caplog, "poll.definition_changed")
    assert logged["changed"] == next(iter(change))
    assert logged["old"] != logged["new"] and logged["trigger"] == "leads"
    # the next poll is an ordinary one again
    leads(upstream, [{"id": "L-new", "email": "new@x.test"}, *LEADS[:12]])
    with caplog.at_level(logging.INFO):
        later = poll(after, store, upstream)
    assert (later.first_poll, later.redefined, later.new_events) == (False, False, 1)
    assert len(messages(caplog, "poll.definition_changed")) == 1


def test_a_re_seed_keeps_what_was_seen_and_an_emit_trigger_fires_only_the_unseen(
    db_url: str, store: Store, upstream: Upstream
) -> None:
    leads(upstream, LEADS[:3])
    assert poll(make_config(db_url), store, upstream).remembered == 3
    emit = make_config(db_url, {"leads": {"params": {"x": "1"}, "on_first_poll": "emit"}})
    leads(upstream, LEADS[:5])
    again = poll(emit, store, upstream)
    assert (again.first_poll, again.redefined, again.new_events) == (True, True, 2)
    with store.db.engine.connect() as conn:
        fired = set(conn.execute(select(events.c.item_key)).scalars())
    assert fired == {"L3", "L4"}


def test_a_re_seeded_update_trigger_moves_versions_without_firing(
    db_url: str, store: Store, upstream: Upstream
) -> None:
    items = [{"id": f"L{i}", "status": "new", "tags": ["a"]} for i in range(4)]
    config = make_config(db_url, {"lead_updates": {}})
    leads(upstream, items)
    assert poll(config, store, upstream, "lead_updates").first_poll
    watched = make_config(db_url, {"lead_updates": {"update_fields": ["status", "tags"]}})
    again = poll(watched, store, upstream, "lead_updates")
    assert (again.redefined, again.new_events, again.held) == (True, 0, 0)
    changed = [{**items[0], "tags": ["a", "b"]}, *items[1:]]
    leads(upstream, changed)
    later = poll(watched, store, upstream, "lead_updates")
    assert later.new_events == 1  # only the item whose watched fields changed since


def test_an_upgraded_database_adopts_the_definition_without_a_re_seed(
    db_url: str, store: Store, upstream: Upstream
) -> None:
    config = make_config(db_url)
    leads(upstream, LEADS[:3])
    poll(config, store, upstream)
    with store.db.engine.begin() as conn:  # as a row written before 0006
        conn.execute(update(poll_state).values(definition_fingerprint=None))
    leads(upstream, LEADS[:4])
    adopted = poll(config, store, upstream)
    assert (adopted.first_poll, adopted.new_events) == (False, 1)
    state = store.polls.state("acme", "leads")
    assert state is not None and state.definition_fingerprint is not None


def test_0006_leaves_existing_triggers_without_a_fingerprint(db_url: str) -> None:
    engine = create_engine(db_url)
    at = datetime(2026, 12, 1, tzinfo=UTC)
    try:
        with engine.begin() as conn:
            command.upgrade(alembic_config(conn), "0005")
            conn.execute(
                text(
                    "INSERT INTO poll_state (account, trigger, seeded_at) "
                    "VALUES ('acme', 'leads', :at)"
                ),
                {"at": at},
            )
        with Store.open(db_url) as store:
            state = store.polls.state("acme", "leads")
            assert state is not None
            assert (state.seeded_at, state.definition_fingerprint) == (at, None)
        with engine.begin() as conn:
            command.downgrade(alembic_config(conn), "0005")
            columns = {c["name"] for c in inspect(conn).get_columns("poll_state")}
            assert "definition_fingerprint" not in columns
            command.upgrade(alembic_config(conn), "head")
    finally:
        engine.dispose()
