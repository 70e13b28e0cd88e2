"""The console's dead and held deliveries page (``/deliveries``) on SQLite and
PostgreSQL: what it lists and how it filters, the overview's counts linking to it, and
the bulk replay: the count first (the API's dry run, nothing changed), then the
confirmed replay (CSRF required) putting the deliveries back to pending."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta

import pytest

from tests.integration.test_admin_api import T0, fire, make_config
from tests.integration.test_console_pages import SCRIPT, Browser, csrf_of, run
from trigger_engine.db.store import Store
from trigger_engine.states import DeliveryStatus
from trigger_engine.types import AttemptOutcome, EventFilter


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    s = Store.open(db_url)
    yield s
    s.close()


def _statuses(store: Store, sink: str) -> dict[DeliveryStatus, int]:
    return dict(store.sinks.stats()[sink].counts)


def _setup(store: Store) -> list[str]:
    """Three leads to crm and ops: two crm deliveries dead (HTTP 500), the third
    pending; ops paused, its three held. The event ids, newest first."""
    fire(store, [{"id": str(i), "name": f"Lead {i}"} for i in range(3)])
    ids = [e.id for e in store.events.list(EventFilter(), limit=10)]
    claimed = store.deliveries.claim_due(
        owner="n", now=T0 + timedelta(hours=1), lease=60, capacity={"crm": 100}
    )
    dead = [d for d in claimed if d.sink == "crm" and d.event_id in ids[:2]]
    assert len(dead) == 2
    store.deliveries.record_attempts(
        [
            AttemptOutcome(
                d.id,
                "crm",
                d.event_id,
                1,
                T0 + timedelta(hours=1),
                12,
                500,
                f"HTTP 500 {SCRIPT}",
                DeliveryStatus.DEAD,
            )
            for d in dead
        ],
        owner="n",
    )
    store.deliveries.release_claims("n")
    store.sinks.set_paused("ops", True, reason="by hand", now=T0)
    assert _statuses(store, "crm")[DeliveryStatus.DEAD] == 2
    assert _statuses(store, "ops")[DeliveryStatus.HELD] == 3
    return ids


def _rows(page: str) -> list[str]:
    return re.findall(r'<tr data-delivery="([^"]+)">', page)


def test_the_page_lists_dead_and_held_deliveries(store: Store) -> None:
    ids = _setup(store)
    config = make_config(str(store.db.engine.url), "http://127.0.0.1:9")

    async def test(b: Browser) -> None:
        status, _, _ = await b.get("/deliveries")
        assert status == 401
        await b.login()
        status, text, _ = await b.get("/deliveries")
        assert status == 200
        assert sorted(_rows(text)) == sorted(
            [f"{i}/crm" for i in ids[:2]] + [f"{i}/ops" for i in ids]
        )
        status, text, _ = await b.get("/deliveries", params={"status": "dead"})
        assert _rows(text) == [f"{i}/crm" for i in ids[:2]]
        row = re.search(rf'<tr data-delivery="{ids[0]}/crm">(.*?)</tr>', text)
        assert row
        cells = re.findall(r"<td>(.*?)</td>", row.group(1))
        assert cells[0] == f'<a href="/events/{ids[0]}">{ids[0]}</a>'
        assert cells[1:6] == ["crm", "dead", "lead.new", "acme", "1"]
        # the error is upstream text: escaped, never a tag
        assert SCRIPT not in text and "HTTP 500 &lt;script&gt;alert(1)&lt;/script&gt;" in text
        _, text, _ = await b.get("/deliveries", params={"status": "held", "sink": "ops"})
        assert _rows(text) == [f"{i}/ops" for i in ids]
        _, text, _ = await b.get("/deliveries", params={"status": "dead", "sink": "ops"})
        assert _rows(text) == [] and "No dead or held deliveries match." in text
        _, text, _ = await b.get("/deliveries", params={"type": "lead.nwe"})
        assert "did you mean" in text.lower() and _rows(text) == []
        status, text, _ = await b.get("/deliveries", params={"status": "pending"})
        assert status == 400 and "status must be dead or held, not &#x27;pending&#x27;" in text
        # the overview's dead and held counts link here
        _, text, _ = await b.get("/")
        assert '<a data-field="dead" href="/deliveries?status=dead&amp;sink=crm">2</a>' in text
        assert '<a data-field="held" href="/deliveries?status=held&amp;sink=ops">3</a>' in text

    run(config, store, test)


def test_bulk_replay_shows_the_count_then_replays_on_confirm(store: Store) -> None:
    ids = _setup(store)
    config = make_config(str(store.db.engine.url), "http://127.0.0.1:9")

    async def test(b: Browser) -> None:
        await b.login()
        _, text, _ = await b.get("/deliveries", params={"status": "dead", "sink": "crm"})
        csrf = csrf_of(text)
        assert 'action="/deliveries/replay"' in text
        selection = {"status": "dead", "sink": "crm"}
        # without the CSRF token: refused, nothing changed
        status, text, _ = await b.post("/deliveries/replay", {**selection, "confirm": "yes"})
        assert status == 403 and "CSRF" in text
        assert _statuses(store, "crm")[DeliveryStatus.DEAD] == 2
        # first the count (a dry run): nothing changed yet
        status, text, _ = await b.post("/deliveries/replay", {**selection, "csrf_token": csrf})
        assert status == 200 and "Replay 2 deliveries?" in text
        assert 'name="confirm" value="yes"' in text
        assert _statuses(store, "crm")[DeliveryStatus.DEAD] == 2
        # then the replay: back to pending, reported
        status, _, response = await b.post(
            "/deliveries/replay", {**selection, "confirm": "yes", "csrf_token": csrf}
        )
        assert status == 303
        location = response.headers["Location"]
        assert location.startswith("/deliveries?status=dead&sink=crm")
        _, text, _ = await b.get(location)
        assert "replayed 2 deliveries of 2 events." in text
        assert _rows(text) == []
        counts = _statuses(store, "crm")
        assert counts.get(DeliveryStatus.DEAD, 0) == 0
        assert counts[DeliveryStatus.PENDING] == 3
        replayed = store.events.list(EventFilter(event_ids=tuple(ids[:2])), limit=10)
        assert len(replayed) == 2
        for ev in replayed:
            crm = next(d for d in ev.deliveries if d.sink == "crm")
            assert crm.status == DeliveryStatus.PENDING and crm.attempts == 0
        # held deliveries to a sink still paused: the count says they stay held
        _, text, _ = await b.post(
            "/deliveries/replay", {"status": "held", "sink": "ops", "csrf_token": csrf}
        )
        assert "Replay 3 deliveries?" in text
        assert "3 to a paused sink stay held until it is resumed." in text

    run(config, store, test)


def test_a_form_post_with_origin_null_is_judged_by_sec_fetch_site(store: Store) -> None:
    """Chromium sends ``Origin: null`` with a form under ``Referrer-Policy: no-referrer``."""
    _setup(store)
    config = make_config(str(store.db.engine.url), "http://127.0.0.1:9")

    async def test(b: Browser) -> None:
        await b.login()
        _, text, _ = await b.get("/deliveries")
        form = {"status": "dead", "csrf_token": csrf_of(text)}
        status, _, _ = await b.post("/deliveries/replay", form, headers={"Origin": "null"})
        assert status == 403
        status, _, _ = await b.post(
            "/deliveries/replay",
            form,
            headers={"Origin": "null", "Sec-Fetch-Site": "cross-site"},
        )
        assert status == 403
        status, text, _ = await b.post(
            "/deliveries/replay",
            form,
            headers={"Origin": "null", "Sec-Fetch-Site": "same-origin"},
        )
        assert status == 200 and "Replay 2 deliveries?" in text

    run(config, store, test)
