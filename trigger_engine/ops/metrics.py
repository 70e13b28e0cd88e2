"""Prometheus metrics, in a registry of the engine's own (not the process-global one).

Counters and histograms are fed by the poller's and dispatcher's reports; the backlog
gauges are read from the store at scrape time, so they are right on every node and after
restarts. They cover the sinks that some node delivers to (``known_sinks``: configured
here or served by a live node): a sink removed from every configuration has no series,
so an alert on its age clears (``status`` and ``sinks`` report its waiting deliveries).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from trigger_engine.states import DeliveryStatus
from trigger_engine.types import AttemptOutcome, PollReport, SinkStats

BACKLOG_STATUSES = tuple(s for s in DeliveryStatus if s is not DeliveryStatus.DELIVERED)


class _Backlog(Collector):
    def __init__(
        self,
        stats: Callable[[], dict[str, SinkStats]],
        clock: Callable[[], datetime],
        known_sinks: Callable[[], Collection[str]] | None,
    ) -> None:
        self.stats = stats
        self.clock = clock
        self.known_sinks = known_sinks

    def collect(self) -> Iterable[Metric]:
        stats: dict[str, SinkStats | None] = dict(self.stats())
        now = self.clock()
        if self.known_sinks is not None:  # each known sink, zeros when the store has none
            stats = {name: stats.get(name) for name in self.known_sinks()}
        backlog = GaugeMetricFamily(
            "trigger_engine_delivery_backlog",
            "Deliveries by sink and status (pending, failed, dead, held)",
            labels=["sink", "status"],
        )
        oldest = GaugeMetricFamily(
            "trigger_engine_oldest_pending_seconds",
            "Age of the oldest delivery not yet delivered or dead, per sink (0: none)",
            labels=["sink"],
        )
        holding = GaugeMetricFamily(
            "trigger_engine_sink_holding",
            "1 while the sink's deliveries are held (paused by hand, or disabled by hand or "
            "by a 410), by why; 0 otherwise",
            labels=["sink", "reason"],
        )
        for name, st in sorted(stats.items()):
            holding.add_metric([name, "paused"], 1 if st and st.paused else 0)
            holding.add_metric([name, "disabled"], 1 if st and st.disabled else 0)
            for status in BACKLOG_STATUSES:
                backlog.add_metric([name, status], st.counts.get(status, 0) if st else 0)
            age = 0.0
            if st is not None and st.oldest_due_created_at is not None:
                age = max(0.0, (now - st.oldest_due_created_at).total_seconds())
            oldest.add_metric([name], age)
        yield backlog
        yield oldest
        yield holding


class _Quarantine(Collector):
    def __init__(self, counts: Callable[[], dict[tuple[str, str], int]]) -> None:
        self.counts = counts

    def collect(self) -> Iterable[Metric]:
        gauge = GaugeMetricFamily(
            "trigger_engine_items_quarantined",
            "Items set aside by their poll (they cannot be keyed, written or stored)",
            labels=["account", "trigger"],
        )
        for (account, trigger), n in sorted(self.counts().items()):
            gauge.add_metric([account, trigger], n)
        yield gauge


class _Store(Collector):
    """The store's health: failed units of work, and triggers failing for a while."""

    def __init__(
        self,
        failures: Callable[[], Mapping[str, int]],
        failing: Callable[[], Mapping[tuple[str, str], bool]],
    ) -> None:
        self.failures = failures
        self.failing = failing

    def collect(self) -> Iterable[Metric]:
        counter = CounterMetricFamily(
            "trigger_engine_store_failures",
            "Units of work the database failed (lost connection, or refused), by unit",
            labels=["unit"],
        )
        for unit, n in sorted(self.failures().items()):
            counter.add_metric([unit], n)
        yield counter
        gauge = GaugeMetricFamily(
            "trigger_engine_trigger_failing",
            "1 when a trigger's polls have failed for longer than 3 of its intervals",
            labels=["account", "trigger"],
        )
        for (account, trigger), failing in sorted(self.failing().items()):
            gauge.add_metric([account, trigger], 1 if failing else 0)
        yield gauge


class _SearchBacklog(Collector):
    NAME = "trigger_engine_search_backlog"
    HELP = (
        "Events written but not yet in the payload search's index (the search finds them "
        "all the same; the indexer takes them every 5 s)"
    )

    def __init__(self, backlog: Callable[[], int]) -> None:
        self.backlog = backlog

    def describe(self) -> Iterable[Metric]:  # registering it reads no database
        yield GaugeMetricFamily(self.NAME, self.HELP)

    def collect(self) -> Iterable[Metric]:
        yield GaugeMetricFamily(self.NAME, self.HELP, value=self.backlog())


class Metrics:
    """The engine's Prometheus metrics, fed by poll reports and attempt outcomes; the
    backlogs and the quarantine are read from the store at scrape time (``stats`` need
    not count delivered deliveries: none is exported). ``known_sinks``: the sinks whose
    backlog is exported, zeros included (None: every sink the store knows)."""

    def __init__(
        self,
        stats: Callable[[], dict[str, SinkStats]],
        clock: Callable[[], datetime],
        *,
        quarantined: Callable[[], dict[tuple[str, str], int]] | None = None,
        store_failures: Callable[[], Mapping[str, int]] | None = None,
        triggers_failing: Callable[[], Mapping[tuple[str, str], bool]] | None = None,
        known_sinks: Callable[[], Collection[str]] | None = None,
        search_backlog: Callable[[], int] | None = None,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.polls = Counter(
            "trigger_engine_polls",
            "Polls by outcome",
            ["account", "trigger", "outcome"],
            registry=r,
        )
        self.poll_duration = Histogram(
            "trigger_engine_poll_duration_seconds",
            "Time one poll took",
            ["trigger"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=r,
        )
        self.items_seen = Counter(
            "trigger_engine_items_seen",
            "Items listed by the API, per poll",
            ["account", "trigger"],
            registry=r,
        )
        self.events = Counter(
            "trigger_engine_events", "Events created", ["account", "type"], registry=r
        )
        self.deliveries = Counter(
            "trigger_engine_deliveries",
            "Delivery attempts by outcome (delivered, failed, dead)",
            ["sink", "outcome"],
            registry=r,
        )
        self.delivery_latency = Histogram(
            "trigger_engine_delivery_latency_seconds",
            "Time one delivery attempt took",
            ["sink"],
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 15, 30),
            registry=r,
        )
        r.register(_Backlog(stats, clock, known_sinks))
        if quarantined is not None:
            r.register(_Quarantine(quarantined))
        if store_failures is not None and triggers_failing is not None:
            r.register(_Store(store_failures, triggers_failing))
        if search_backlog is not None:
            r.register(_SearchBacklog(search_backlog))
        self._event_types: dict[str, str] = {}

    def event_type_of(self, trigger: str, event_type: str) -> None:
        """Label a trigger's events metric with its event type."""
        self._event_types[trigger] = event_type

    def observe_poll(self, report: PollReport) -> None:
        """Count one poll (its outcome, duration, items and events)."""
        self.polls.labels(report.account, report.trigger, report.outcome).inc()
        self.poll_duration.labels(report.trigger).observe(report.duration)
        if report.ok:
            self.items_seen.labels(report.account, report.trigger).inc(report.items)
            if report.new_events:
                kind = self._event_types.get(report.trigger, report.trigger)
                self.events.labels(report.account, kind).inc(report.new_events)

    def observe_attempt(self, outcome: AttemptOutcome) -> None:
        """Count one delivery attempt (its outcome and latency)."""
        self.deliveries.labels(outcome.sink, outcome.new_status).inc()
        self.delivery_latency.labels(outcome.sink).observe(outcome.duration_ms / 1000)

    def render(self) -> bytes:
        """The metrics in Prometheus' text format."""
        return generate_latest(self.registry)
