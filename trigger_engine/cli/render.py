"""What the commands print: ``status``, ``events``, ``sinks``, ``triggers``, ``replay``,
``backfill``, ``run --once`` and ``check``. Pure: values in, text or JSON-ready dicts out; the store
does the reading.

Text is the output boundary: every line is passed through
:func:`~trigger_engine.core.escape.escape_controls`, because it quotes what others wrote (item
keys, upstream error texts); the JSON-ready dicts hold the exact values. A sink URL is shown by
:func:`safe_url`, without its credentials."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from trigger_engine.clock import isoformat_z
from trigger_engine.config import Config
from trigger_engine.config.shape import config_digest, served_sinks
from trigger_engine.core.escape import escape_controls
from trigger_engine.core.exact_json import parse_json
from trigger_engine.core.redact import origin_only, redact_url
from trigger_engine.core.registry import differences
from trigger_engine.core.retry import is_failing
from trigger_engine.core.words import plural
from trigger_engine.delivery.dispatcher import DrainReport
from trigger_engine.polling.backfill import BackfillStep
from trigger_engine.types import (
    DUE_STATUSES,
    NODE_ALIVE_WITHIN,
    QUARANTINED,
    WAITING_STATUSES,
    CheckReport,
    DeliveryStatus,
    EventDetail,
    EventView,
    NodeView,
    PollOutcome,
    PollReport,
    PollState,
    QuarantineView,
    ReplayResult,
    SinkChange,
    SinkCheck,
    SinkDrop,
    SinkStats,
    TriggerCheck,
)

# A sink's deliveries by status, in the order status and sinks --json list them.
_COUNTED = (
    DeliveryStatus.PENDING,
    DeliveryStatus.FAILED,
    DeliveryStatus.DEAD,
    DeliveryStatus.HELD,
    DeliveryStatus.DELIVERED,
)


def _ts(moment: datetime | None) -> str | None:
    return None if moment is None else isoformat_z(moment)


def safe_url(url: str) -> str:
    """A sink URL as shown: no query, no credentials (either may carry a token)."""
    return redact_url(url, drop=True)


def _text(lines: Sequence[str]) -> str:
    """Lines of text output, each escaped (one line stays one line), joined."""
    return "\n".join(escape_controls(line) for line in lines)


# ----------------------------------------------------------------------------- triggers


@dataclass(frozen=True)
class TriggerRow:
    """One configured (account, trigger) with its stored state, as commands show it."""

    account: str
    trigger: str
    enabled: bool
    state: PollState | None
    quarantined: int = 0  # items its polls set aside
    interval: float = 0.0  # seconds between its polls

    def failing(self, now: datetime) -> bool:
        """Whether its polls have failed for longer than a few intervals (``is_failing``)."""
        s = self.state
        return s is not None and is_failing(
            failures=s.consecutive_failures,
            failing_since=s.failing_since,
            now=now,
            interval=self.interval,
        )

    def label(self, now: datetime) -> str:
        """The trigger's state in a few words: disabled, paused, backing off, active..."""
        s = self.state
        if not self.enabled:
            return "disabled in config"
        if s is not None and s.paused:
            return f"paused: {s.paused_reason or 'by hand'}"
        if self.failing(now):
            assert s is not None and s.failing_since is not None
            return (
                f"failing since {isoformat_z(s.failing_since)} "
                f"({_polls(s.consecutive_failures)} in a row"
                + ("; the database failed them" if s.last_outcome == PollOutcome.STORE else "")
                + ")"
            )
        if s is not None and s.backoff_until is not None and s.backoff_until > now:
            return (
                f"backing off until {isoformat_z(s.backoff_until)} "
                f"after {_polls(s.consecutive_failures)} failed"
            )
        if s is None or s.last_poll_at is None:
            return "not polled yet"
        return "active"

    def line(self, now: datetime) -> str:
        """One line of ``triggers``."""
        known = self.state.items_known if self.state else 0
        return _text(
            [f"{self.account}/{self.trigger}: {self.label(now)} ({plural(known, 'item')} known)"]
        )

    def as_dict(self, now: datetime) -> dict[str, Any]:
        """The trigger's row of ``status --json``."""
        s = self.state
        return {
            "account": self.account,
            "trigger": self.trigger,
            "state": self.label(now),
            "enabled": self.enabled,
            "paused": bool(s and s.paused),
            "paused_reason": s.paused_reason if s else None,
            "seeded": bool(s and s.seeded_at),
            "last_poll_at": _ts(s.last_poll_at) if s else None,
            "last_outcome": s.last_outcome if s else None,
            "last_error": s.last_error if s else None,
            "last_success_at": _ts(s.last_success_at) if s else None,
            "consecutive_failures": s.consecutive_failures if s else 0,
            "failing": self.failing(now),
            "failing_since": _ts(s.failing_since) if s else None,
            "backoff_until": _ts(s.backoff_until) if s else None,
            "items_known": s.items_known if s else 0,
            "lease_owner": s.lease_owner if s and _live(s.lease_expires_at, now) else None,
            "quarantined": self.quarantined,
        }


def _polls(n: int) -> str:
    return plural(n, "poll")


def _live(expires: datetime | None, now: datetime) -> bool:
    return expires is not None and expires > now


# A node whose last heartbeat is older than this is shown as vanished.
VANISHED_AFTER = NODE_ALIVE_WITHIN  # three missed heartbeats


def node_dicts(
    views: list[NodeView], now: datetime, config: Config | None = None
) -> list[dict[str, Any]]:
    """The nodes of ``status``: alive, stopped or vanished (no heartbeat for 30 s); with
    ``config``, whether each node's configuration is the ``same`` as it, ``differs`` (and
    how), or is ``unknown`` (the node did not say: an older version)."""
    rows = []
    for v in views:
        if v.stopped_at is not None:
            state = "stopped"
        elif not v.alive(now):
            state = "vanished"
        else:
            state = "alive"
        row: dict[str, Any] = {
            "name": v.name,
            "state": state,
            "version": v.version,
            "started_at": _ts(v.started_at),
            "heartbeat_at": _ts(v.heartbeat_at),
            "leases": list(v.leases),
        }
        if config is not None:
            row.update(_node_config(v, config))
        rows.append(row)
    return rows


def _node_config(v: NodeView, config: Config) -> dict[str, Any]:
    """How node ``v``'s configuration compares with ``config`` (see :func:`node_dicts`)."""
    sinks = None if v.sinks is None else {n: _events(e) for n, e in v.sinks.items()}
    if v.config_digest is None or v.sinks is None:
        return {"config": "unknown", "sinks": sinks, "config_differences": []}
    found = differences(served_sinks(config), v.sinks)
    if v.config_digest != config_digest(config) and not found:
        found = ["its accounts or triggers differ (names, dedupe definitions or event types)"]
    return {
        "config": "differs" if found else "same",
        "sinks": sinks,
        "config_differences": found,
    }


def _events(events: tuple[str, ...] | None) -> list[str] | None:
    return None if events is None else list(events)


def trigger_rows(
    config: Config,
    states: list[PollState],
    quarantined: Mapping[tuple[str, str], int] | None = None,
) -> list[TriggerRow]:
    """Every configured (account, trigger), with its stored state if any and how many of
    its items are in quarantine."""
    by_key = {(s.account, s.trigger): s for s in states}
    counts = quarantined or {}
    return [
        TriggerRow(
            account.name,
            name,
            trigger.enabled,
            by_key.get((account.name, name)),
            counts.get((account.name, name), 0),
            trigger.interval,
        )
        for account in config.accounts
        for name, trigger in config.triggers.items()
    ]


# ----------------------------------------------------------------------------- sinks


# The states of a sink that is not in this configuration (see sink_dicts).
ELSEWHERE = "elsewhere"  # another live node serves it
REMOVED = "removed"  # no live node serves it, and deliveries to it wait


def sink_dicts(
    config: Config,
    stats: dict[str, SinkStats],
    now: datetime,
    serving: Mapping[str, Sequence[str]] | None = None,
) -> list[dict[str, Any]]:
    """The sinks of ``status --json`` and ``sinks``: state and backlog by status. After
    the configured sinks, those the database knows that are not configured here: served
    by another live node (``serving``: sink → node names), state ``elsewhere``; or, with
    deliveries waiting, ``removed``, with what to run."""
    rows = []
    for sink in config.sinks:
        st = stats.get(sink.name)
        rows.append(
            {
                "name": sink.name,
                # a Slack webhook's token is its path: only its host is shown
                "url": origin_only(sink.url) if sink.format == "slack" else safe_url(sink.url),
                "state": sink_state_word(st),
                **_backlog(st, now),
            }
        )
    configured = {s.name for s in config.sinks}
    served = serving or {}
    for name, st in sorted(stats.items()):
        if name in configured:
            continue
        waiting = sum(st.counts.get(s, 0) for s in WAITING_STATUSES)
        extra: dict[str, Any]
        if name in served:
            extra = {"state": ELSEWHERE, "served_by": list(served[name])}
        elif waiting:
            extra = {"state": REMOVED, "waiting": waiting, "hint": removed_hint(name)}
        else:
            continue
        rows.append({"name": name, "url": None, **extra, **_backlog(st, now)})
    return rows


def sink_state_word(st: SinkStats | None) -> str:
    """``disabled`` (by hand or a 410), ``paused`` (by hand) or ``enabled``: a disabled
    sink that is also paused says disabled (enabling it leaves it paused)."""
    if st is not None and st.disabled:
        return "disabled"
    if st is not None and st.paused:
        return "paused"
    return "enabled"


def removed_hint(name: str) -> str:
    """What to run for the deliveries of a removed sink."""
    return (
        f"list them with 'trigger-engine events --sink {name}', send them to another sink "
        f"with 'trigger-engine sinks drop {name} --to OTHER', or drop them with "
        f"'trigger-engine sinks drop {name}'"
    )


def _backlog(st: SinkStats | None, now: datetime) -> dict[str, Any]:
    counts = st.counts if st else {}
    oldest = st.oldest_due_created_at if st else None
    return {
        "disabled_reason": st.disabled_reason if st else None,
        "disabled_at": _ts(st.disabled_at) if st else None,
        "paused": bool(st and st.paused),
        "paused_reason": st.paused_reason if st else None,
        "paused_at": _ts(st.paused_at) if st else None,
        **{status.value: counts.get(status, 0) for status in _COUNTED},
        "in_flight": st.in_flight if st else 0,
        "last_success_at": _ts(st.last_success_at) if st else None,
        "oldest_pending_seconds": (
            None if oldest is None else round((now - oldest).total_seconds(), 1)
        ),
    }


def _sink_state(s: dict[str, Any]) -> str:
    """A sink's state in a few words, for the text of ``status`` and ``sinks``."""
    if s["state"] == ELSEWHERE:
        return f"not configured here, served by {', '.join(s['served_by'])}"
    if s["state"] == REMOVED:
        waiting = plural(s["waiting"], "delivery", "deliveries")
        return f"removed from the configuration, {waiting} waiting"
    state: str = s["state"]
    if state == "disabled":
        state += f" ({s['disabled_reason']})" if s["disabled_reason"] else ""
        if s.get("paused"):
            state += ", paused"
    elif state == "paused":
        state += f" ({s['paused_reason']})" if s.get("paused_reason") else ""
    return state


def status_dict(
    config: Config,
    states: list[PollState],
    stats: dict[str, SinkStats],
    now: datetime,
    quarantined: Mapping[tuple[str, str], int] | None = None,
    serving: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, Any]:
    """The whole of ``status --json`` but the nodes."""
    return {
        "triggers": [row.as_dict(now) for row in trigger_rows(config, states, quarantined)],
        "sinks": sink_dicts(config, stats, now, serving),
    }


def status_text(status: dict[str, Any]) -> str:
    """``status`` as text."""
    lines = ["TRIGGERS"]
    for t in status["triggers"]:
        last = t["last_poll_at"] or "never"
        outcome = t["last_outcome"] or "-"
        lines.append(
            f"  {t['account']}/{t['trigger']}: {t['state']}; last poll {last} ({outcome}); "
            f"{plural(t['items_known'], 'item')} known"
            + (f"; {t['quarantined']} quarantined" if t.get("quarantined") else "")
        )
        if t["last_error"] and t["last_outcome"] != PollOutcome.OK:
            lines.append(f"      last error: {t['last_error']}")
    if status.get("nodes"):
        lines.append("NODES")
        for n in status["nodes"]:
            held = ", ".join(n["leases"]) or "no trigger right now"
            config = "; config differs" if n.get("config") == "differs" else ""
            lines.append(
                f"  {n['name']}: {n['state']}, last heartbeat {n['heartbeat_at']}; "
                f"polling {held}{config}"
            )
        differing = [
            n for n in status["nodes"] if n.get("config") == "differs" and n["state"] == "alive"
        ]
        for n in differing:
            lines.append(
                f"  node {n['name']}'s configuration differs from this one: "
                + "; ".join(n["config_differences"])
            )
    lines.append("SINKS")
    if not status["sinks"]:
        lines.append("  (none configured)")
    for s in status["sinks"]:
        where = f" {s['url']}" if s["url"] else ""
        lines.append(
            f"  {s['name']}{where}: {_sink_state(s)}; pending {s['pending']}, "
            f"failed {s['failed']}, dead {s['dead']}, held {s['held']}, "
            f"delivered {s['delivered']}; last success {s['last_success_at'] or 'never'}"
        )
        if s["state"] == REMOVED:
            lines.append(f"      {s['hint']}")
    return _text(lines)


# ----------------------------------------------------------------------------- events


def event_dict(e: EventView) -> dict[str, Any]:
    """One event of ``events --json``."""
    return {
        "id": e.id,
        "type": e.type,
        "account": e.account or None,  # "": an operational event no account applies to
        "trigger": e.trigger or None,
        "key": e.item_key,
        "created_at": isoformat_z(e.created_at),
        "deliveries": [
            {
                "sink": d.sink,
                "status": d.status,
                "attempts": d.attempts,
                "in_flight": d.in_flight,
                "last_attempt_at": _ts(d.last_attempt_at),
                "last_status_code": d.last_status_code,
                "last_error": d.last_error,
                "next_attempt_at": _ts(d.next_attempt_at),
                "delivered_at": _ts(d.delivered_at),
            }
            for d in e.deliveries
        ],
    }


def event_line(e: EventView) -> str:
    """One event of ``events`` as one line."""
    parts = []
    for d in e.deliveries:
        detail = plural(d.attempts, "attempt")
        if d.status != DeliveryStatus.DELIVERED and d.last_error:
            detail += f", last: {d.last_error}"
        if d.status in DUE_STATUSES and d.next_attempt_at is not None:
            detail += f", next {isoformat_z(d.next_attempt_at)}"
        parts.append(f"{d.sink}: {d.status} ({detail})")
    where = "; ".join(parts) or "no sink subscribed"
    return _text(
        [
            f"{e.id}  {isoformat_z(e.created_at)}  {e.type}  {e.account or '-'}  "
            f"key={e.item_key}  {where}"
        ]
    )


def payload_value(text: str) -> Any:
    """An event's stored payload (JSON text) as a value, exactly (integers of any size, a
    lone surrogate kept); the text itself if it does not parse."""
    try:
        return parse_json(text.encode("utf-8", "surrogatepass"))
    except ValueError:
        return text


def exact_json(value: Any) -> str:
    """``value`` as indented JSON that keeps every value exact (the standard library's
    writer: integers of any size), non-ASCII as it is, a lone surrogate as its ``\\uXXXX``
    escape (it could not be printed otherwise)."""
    text = json.dumps(value, indent=2, ensure_ascii=False)
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def event_detail_dict(d: EventDetail) -> dict[str, Any]:
    """``events show ID --json``: the event as in ``events --json``, with its ``payload``
    (the item, exactly) and, per delivery, ``attempt_log``: every attempt, oldest first,
    with its time, status code, latency, error and the start of the receiver's answer."""
    doc = event_dict(d.event)
    doc["payload"] = payload_value(d.payload)
    for delivery in doc["deliveries"]:
        delivery["attempt_log"] = [
            {
                "attempt": a.attempt,
                "started_at": isoformat_z(a.started_at),
                "status_code": a.status_code,
                "latency_ms": a.duration_ms,
                "error": a.error,
                "response_body": a.response_body,
            }
            for a in d.attempts.get(delivery["sink"], ())
        ]
    return doc


def event_detail_text(d: EventDetail) -> str:
    """``events show ID``: the event, its payload as indented JSON, then each delivery with
    each attempt (time, status code, latency, error, the start of the answer)."""
    e = d.event
    lines = [
        f"event {e.id}",
        f"  type {e.type}, account {e.account}, trigger {e.trigger}, key {e.item_key}",
        f"  created {isoformat_z(e.created_at)}",
        "payload:",
        *("  " + line for line in exact_json(payload_value(d.payload)).splitlines()),
        "deliveries:" if e.deliveries else "deliveries: none (no sink subscribed)",
    ]
    for v in e.deliveries:
        state = f"{v.status}, {plural(v.attempts, 'attempt')}"
        if v.delivered_at is not None:
            state += f", delivered {isoformat_z(v.delivered_at)}"
        elif v.status in DUE_STATUSES and v.next_attempt_at is not None:
            state += f", next attempt {isoformat_z(v.next_attempt_at)}"
        elif v.last_error and not d.attempts.get(v.sink):
            state += f", {v.last_error}"
        if v.in_flight:
            state += ", being attempted now"
        lines.append(f"  {v.sink}: {state}")
        for a in d.attempts.get(v.sink, ()):
            code = "-" if a.status_code is None else str(a.status_code)
            lines.append(
                f"    #{a.attempt}  {isoformat_z(a.started_at)}  status {code}  "
                f"{a.duration_ms} ms  {a.error or 'ok'}"
            )
            if a.response_body:
                lines.append(f"        answer: {a.response_body}")
    return _text(lines)


def quarantined_dict(q: QuarantineView, event_type: str) -> dict[str, Any]:
    """One quarantined item in ``events --json``: no event id (it has no event yet), the
    status ``quarantined``, the reason and the key."""
    return {
        "id": None,
        "type": event_type,
        "account": q.account,
        "trigger": q.trigger,
        "key": q.key,
        "created_at": isoformat_z(q.first_seen_at),
        "status": QUARANTINED,
        "reason": q.reason,
        "last_seen_at": isoformat_z(q.last_seen_at),
        "polls": q.polls,
        "deliveries": [],
    }


def quarantined_line(q: QuarantineView, event_type: str) -> str:
    """One quarantined item of ``events`` as one line."""
    return _text(
        [
            f"{QUARANTINED}  {isoformat_z(q.first_seen_at)}  {event_type}  {q.account}  "
            f"key={q.key}  {q.reason} (seen by {plural(q.polls, 'poll')}, "
            f"last {isoformat_z(q.last_seen_at)}; tried again at every poll)"
        ]
    )


def sink_line(s: dict[str, Any]) -> str:
    """One line of ``sinks``, from a :func:`sink_dicts` row (two for a removed sink: the
    second says what to run)."""
    where = f"  {s['url']}" if s["url"] else ""
    lines = [
        f"{s['name']}{where}  {_sink_state(s)}  pending {s['pending']}  failed {s['failed']}  "
        f"dead {s['dead']}  held {s['held']}  delivered {s['delivered']}"
    ]
    if s["state"] == REMOVED:
        lines.append(f"  {s['hint']}")
    return _text(lines)


# ----------------------------------------------------------------------------- actions


def once_text(polls: Sequence[PollReport], delivery: DrainReport) -> str:
    """What ``run --once`` did: a line per poll, then the deliveries."""
    lines = []
    for poll in polls:
        where = f"{poll.account}/{poll.trigger}"
        if poll.outcome in (PollOutcome.SKIPPED, PollOutcome.LEASE_LOST):
            lines.append(f"{where}: not polled here: {poll.error}")
        elif poll.ok:
            what = (
                f"first poll, {poll.remembered} remembered, {poll.new_events} fired"
                if poll.first_poll
                else f"{poll.new_events} new"
            )
            if poll.redefined:
                what = what.replace("first poll", "first poll again (its definition changed)")
            if poll.quarantined:
                what += f", {poll.quarantined} quarantined (events --status quarantined)"
            lines.append(f"{where}: {plural(poll.items, 'item')}, {what}")
        else:
            lines.append(f"{where}: failed: {poll.error}")
    d = delivery
    lines.append(
        f"deliveries: {d.attempted} attempted, {d.delivered} delivered, "
        f"{d.failed} to retry later, {d.dead} dead"
    )
    return _text(lines)


def replay_text(result: ReplayResult, *, dry_run: bool, by_event: bool) -> str:
    """What ``replay`` queued, and what it skipped and why."""
    verb = "would queue" if dry_run else "queued"
    lines = [f"{verb} {plural(result.queued, 'delivery')} (of {plural(result.events, 'event')})"]
    if result.held:
        lines.append(
            f"{result.held} of them to paused sinks: held, sent in order when the sink is "
            "resumed ('trigger-engine sinks resume NAME')"
        )
    if result.skipped_disabled:
        lines.append(
            f"skipped {plural(result.skipped_disabled, 'delivery')} to disabled sinks "
            "(re-enable with 'trigger-engine sinks enable NAME', then replay)"
        )
    if result.skipped_unknown:
        lines.append(
            f"skipped {plural(result.skipped_unknown, 'delivery')} to sinks no longer "
            "configured (send them to a configured sink with 'trigger-engine sinks drop "
            "NAME --to OTHER')"
        )
    if result.skipped_in_flight:
        lines.append(
            f"skipped {plural(result.skipped_in_flight, 'delivery')} being attempted right now"
        )
    if by_event and result.events == 0 and not result.skipped_disabled:
        lines.append("no delivery matched those event ids")
    return _text(lines)


def sink_change_text(action: str, change: SinkChange) -> str:
    """What ``sinks pause|resume|enable|disable NAME`` did to the sink's deliveries."""
    name = change.sink
    lines = [f"sink '{name}' {action}d"]
    if change.held:
        lines.append(f"{plural(change.held, 'delivery', 'deliveries')} held")
    if change.in_flight and action in ("pause", "disable"):
        lines.append(
            f"{plural(change.in_flight, 'delivery', 'deliveries')} in flight: "
            "they finish; a retry they need is held"
        )
    if change.released:
        lines.append(
            f"{plural(change.released, 'held delivery', 'held deliveries')} due now, "
            "sent in order with their original webhook-id"
        )
    if change.paused or change.disabled:
        why, undo = (
            ("disabled", f"sinks enable {name}")
            if change.disabled
            else ("paused", f"sinks resume {name}")
        )
        lines.append(
            f"its deliveries are held while it is {why}; 'trigger-engine {undo}' sends them"
        )
    return _text(lines)


def drop_text(result: SinkDrop, *, dry_run: bool) -> str:
    """What ``sinks drop`` dropped (and queued to another sink), or would."""
    if not result.total:
        return _text([f"sink '{result.sink}' has no deliveries waiting: nothing to drop"])
    by_status = ", ".join(f"{n} {status}" for status, n in result.dropped.items())
    verb, queue = ("would drop", "would queue") if dry_run else ("dropped", "queued")
    line = (
        f"{verb} {plural(result.total, 'delivery', 'deliveries')} ({by_status}) "
        f"of removed sink '{result.sink}'"
    )
    if result.to is not None:
        line += f"; {queue} {result.queued} to '{result.to}'"
        if result.already_there:
            line += (
                f" ({plural(result.already_there, 'event', 'events')} already had a delivery "
                f"to '{result.to}')"
            )
    return _text([line])


def backfill_line(step: BackfillStep, *, dry_run: bool) -> str:
    """One (account, trigger) of ``backfill``: what it fired, or why it failed."""
    where = f"{step.account.name}/{step.trigger.name}"
    if step.result is None:
        return _text([f"{where}: failed: {step.error}"])
    verb = "would fire" if dry_run else "fired"
    line = f"{where}: {verb} {plural(step.result.fired, 'remembered item')}"
    if step.result.not_listed:
        line += f" ({step.result.not_listed} no longer listed by the API)"
    return _text([line])


# ----------------------------------------------------------------------------- check


def _check_trigger_line(t: TriggerCheck) -> str:
    where = f"{t.account}/{t.trigger}"
    if not t.ok or t.items is None:
        return f"{where}: failed: {t.error} ({t.duration_ms} ms)"
    key = ", ".join(t.key)
    fields = ", ".join(t.fields) + (", ..." if t.fields_more else "") if t.fields else "none"
    return (
        f"{where}: ok: {plural(t.items, 'item', 'items')} on the first page, {t.keyless} "
        f"without the key '{key}' ({t.duration_ms} ms); fields: {fields}"
    )


def _check_sink_line(s: SinkCheck) -> str:
    if s.ok:
        return f"sink '{s.sink}': ok: HTTP {s.status_code} in {s.latency_ms} ms ({s.webhook_id})"
    return f"sink '{s.sink}': failed: {s.error} after {s.latency_ms} ms ({s.webhook_id})"


def check_text(report: CheckReport) -> str:
    """What ``check`` found: the configuration, a line per (account, trigger) and a summary
    per account, a line per sink, then how many checks passed."""
    lines = [f"configuration {report.config_path or '(none)'}: ok"]
    if report.problem is not None:
        lines.append(report.problem)
    accounts: dict[str, list[TriggerCheck]] = {}
    for t in report.triggers:
        accounts.setdefault(t.account, []).append(t)
    for account, checks in accounts.items():
        lines += [_check_trigger_line(t) for t in checks]
        failed = [t for t in checks if not t.ok]
        if not failed:
            lines.append(f"account '{account}': ok")
        elif any(t.kind == "auth" for t in failed):
            lines.append(f"account '{account}': API key refused")
        else:
            lines.append(
                f"account '{account}': failed ({len(failed)} of "
                f"{plural(len(checks), 'trigger', 'triggers')})"
            )
    lines += [_check_sink_line(s) for s in report.sinks]
    if not report.sinks_checked:
        lines.append("sinks: not checked (--no-sinks)")
    total = len(report.triggers) + len(report.sinks)
    failed_count = sum(not t.ok for t in report.triggers) + sum(not s.ok for s in report.sinks)
    if report.ok:
        lines.append(f"all {plural(total, 'check', 'checks')} passed")
    else:
        lines.append(f"{failed_count} of {plural(total, 'check', 'checks')} failed")
    return _text(lines)


def check_dict(report: CheckReport) -> dict[str, Any]:
    """``check --json``: ``{"config", "triggers", "sinks", "ok"}``."""
    return {
        "config": {
            "path": report.config_path,
            "ok": True,  # an invalid configuration is exit 2 before any check
            "sinks_checked": report.sinks_checked,
            "error": report.problem,
        },
        "triggers": [
            {
                "account": t.account,
                "trigger": t.trigger,
                "key": list(t.key),
                "ok": t.ok,
                "items": t.items,
                "keyless": t.keyless,
                "fields": list(t.fields),
                "fields_truncated": t.fields_more,
                "kind": None if t.kind is None else str(t.kind),
                "error": t.error,
                "duration_ms": t.duration_ms,
            }
            for t in report.triggers
        ],
        "sinks": [
            {
                "sink": s.sink,
                "ok": s.ok,
                "status_code": s.status_code,
                "latency_ms": s.latency_ms,
                "error": s.error,
                "webhook_id": s.webhook_id,
            }
            for s in report.sinks
        ],
        "ok": report.ok,
    }
