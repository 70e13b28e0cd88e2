"""Metrics names and values, and the health endpoint's verdicts."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from aiohttp.test_utils import TestClient, TestServer

from tests.factories import sink_stats, with_fields
from trigger_engine.ops.health import Health
from trigger_engine.ops.http_api import make_app
from trigger_engine.ops.metrics import Metrics
from trigger_engine.types import AttemptOutcome, PollReport, SinkStats

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def stats() -> dict[str, SinkStats]:
    crm = sink_stats("crm", NOW - timedelta(seconds=90), pending=3, failed=1, delivered=9, dead=2)
    return {"crm": with_fields(crm, in_flight=1, last_success_at=NOW)}


def test_reports_become_counters_and_the_backlog_is_read_at_scrape_time() -> None:
    m = Metrics(stats, lambda: NOW)
    m.event_type_of("leads", "lead.new")
    m.observe_poll(PollReport("acme", "leads", True, "ok", items=10, new_events=2, duration=0.2))
    m.observe_poll(PollReport("acme", "leads", False, "transient", duration=5.0))
    m.observe_attempt(AttemptOutcome(1, "crm", "evt_1", 1, NOW, 120, 200, None, "delivered"))
    m.observe_attempt(AttemptOutcome(2, "crm", "evt_2", 1, NOW, 80, 500, "HTTP 500", "failed"))
    text = m.render().decode()
    expected = [
        'trigger_engine_polls_total{account="acme",outcome="ok",trigger="leads"} 1.0',
        'trigger_engine_polls_total{account="acme",outcome="transient",trigger="leads"} 1.0',
        'trigger_engine_items_seen_total{account="acme",trigger="leads"} 10.0',
        'trigger_engine_events_total{account="acme",type="lead.new"} 2.0',
        'trigger_engine_deliveries_total{outcome="delivered",sink="crm"} 1.0',
        'trigger_engine_deliveries_total{outcome="failed",sink="crm"} 1.0',
        'trigger_engine_poll_duration_seconds_count{trigger="leads"} 2.0',
        'trigger_engine_delivery_latency_seconds_sum{sink="crm"} 0.2',
        'trigger_engine_delivery_backlog{sink="crm",status="pending"} 3.0',
        'trigger_engine_delivery_backlog{sink="crm",status="dead"} 2.0',
        'trigger_engine_oldest_pending_seconds{sink="crm"} 90.0',
    ]
    for line in expected:
        assert line in text, line


def ready(reasons: tuple[str, ...] = ()) -> Health:
    return Health(live=True, ready=not reasons, reasons=reasons)


def get(path: str, *, readiness: Health, liveness: Health) -> tuple[int, dict[str, object]]:
    async def go() -> tuple[int, dict[str, object]]:
        async def check() -> Health:
            return readiness

        app = make_app(Metrics(stats, lambda: NOW), readiness=check, liveness=lambda: liveness)
        async with TestClient(TestServer(app)) as client:
            response = await client.get(path)
            return response.status, await response.json()

    return asyncio.run(go())


def test_healthz_answers_json_with_the_reasons() -> None:
    assert get("/healthz", readiness=ready(), liveness=ready()) == (
        200,
        {"status": "ok", "live": True, "ready": True, "reasons": []},
    )
    status, body = get("/healthz", readiness=ready(("the database failed",)), liveness=ready())
    assert status == 503
    assert body["status"] == "unhealthy" and body["reasons"] == ["the database failed"]


def test_livez_answers_only_for_liveness() -> None:
    # the database failing makes the node unready, not dead: a restart would not help
    status, _ = get("/livez", readiness=ready(("the database failed",)), liveness=ready())
    assert status == 200
    dead = Health(live=False, ready=False, reasons=("the scheduler is not running",))
    status, body = get("/livez", readiness=ready(), liveness=dead)
    assert status == 503 and body["reasons"] == ["the scheduler is not running"]


def test_store_failures_and_failing_triggers_are_exported() -> None:
    m = Metrics(
        stats,
        lambda: NOW,
        store_failures=lambda: {"DeliveryRepository.record_attempts": 3},
        triggers_failing=lambda: {("acme", "leads"): True, ("acme", "campaigns"): False},
    )
    text = m.render().decode()
    assert (
        'trigger_engine_store_failures_total{unit="DeliveryRepository.record_attempts"} 3.0' in text
    )
    assert 'trigger_engine_trigger_failing{account="acme",trigger="leads"} 1.0' in text
    assert 'trigger_engine_trigger_failing{account="acme",trigger="campaigns"} 0.0' in text


def test_the_search_backlog_is_read_at_scrape_time_not_at_registration() -> None:
    backlog = [7]
    reads: list[int] = []

    def read() -> int:
        reads.append(backlog[0])
        return backlog[0]

    m = Metrics(stats, lambda: NOW, search_backlog=read)
    assert reads == []  # registering it asked nothing of the database
    assert "trigger_engine_search_backlog 7.0" in m.render().decode()
    backlog[0] = 0
    assert "trigger_engine_search_backlog 0.0" in m.render().decode()
    assert reads == [7, 0]


@pytest.mark.parametrize("path", ["/metrics"])
def test_metrics_page_is_prometheus_text(path: str) -> None:
    async def go() -> tuple[int, str, str]:
        async def check() -> Health:
            return ready()

        app = make_app(Metrics(stats, lambda: NOW), readiness=check, liveness=ready)
        async with TestClient(TestServer(app)) as client:
            response = await client.get(path)
            return response.status, response.headers["content-type"], await response.text()

    status, content_type, text = asyncio.run(go())
    assert status == 200 and content_type.startswith("text/plain")
    assert "# TYPE trigger_engine_delivery_backlog gauge" in text


def backlog(name: str, **counts: int) -> SinkStats:
    return sink_stats(name, NOW - timedelta(hours=2), **counts)


def test_a_removed_sink_has_no_backlog_series() -> None:
    """Only the sinks some live node delivers to (``known_sinks``, read at every scrape):
    a removed sink's oldest_pending_seconds leaves the page, so an alert on it clears."""
    found = {
        "crm": backlog("crm", pending=1),
        "old": backlog("old", pending=5),
        "s2": backlog("s2"),
    }
    known = {"crm"}
    metrics = Metrics(lambda: found, lambda: NOW, known_sinks=lambda: known)
    text = metrics.render().decode()
    assert 'trigger_engine_oldest_pending_seconds{sink="crm"} 7200.0' in text
    assert 'sink="old"' not in text and 'sink="s2"' not in text
    known.add("s2")  # another live node serves it now
    assert (
        'trigger_engine_delivery_backlog{sink="s2",status="pending"}' in metrics.render().decode()
    )
    # without the callable, every sink the store knows
    assert 'sink="old"' in Metrics(lambda: found, lambda: NOW).render().decode()


def test_a_paused_sink_shows_its_held_backlog_and_why() -> None:
    def paused() -> dict[str, SinkStats]:
        (crm,) = stats().values()
        counts = {**crm.counts, "held": 7}
        return {"crm": replace(crm, counts=counts, paused=True, paused_reason="by hand")}

    text = Metrics(paused, lambda: NOW).render().decode()
    assert 'trigger_engine_delivery_backlog{sink="crm",status="held"} 7.0' in text
    assert 'trigger_engine_sink_holding{reason="paused",sink="crm"} 1.0' in text
    assert 'trigger_engine_sink_holding{reason="disabled",sink="crm"} 0.0' in text
