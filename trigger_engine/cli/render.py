"""What the commands print: ``status``, ``events``, ``sinks``, ``triggers``, ``replay``,
``backfill``, ``run --once`` and ``check``. Pure: values in, text or JSON-ready dicts out; the store
does the reading.

Text is the output boundary: every line is passed through
:func:`~trigger_engine.core.escape.escape_controls`, because it quotes what others wrote (item
keys, upstream error texts); the JSON-ready dicts hold the exact values. A sink URL is shown by
``safe_url``, without its credentials. The JSON views (``status --json``, ``events --json``)
are :mod:`trigger_engine.runtime.views`, shared with the admin API."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from trigger_engine.clock import isoformat_z
from trigger_engine.core.escape import escape_controls
from trigger_engine.core.words import plural
from trigger_engine.runtime.views import ELSEWHERE, REMOVED, exact_json, payload_value
from trigger_engine.states import DUE_STATUSES, QUARANTINED, DeliveryStatus, PollOutcome
from trigger_engine.types import (
    CheckReport,
    EventDetail,
    EventView,
    PollReport,
    QuarantineView,
    ReplayResult,
    SinkChange,
    SinkCheck,
    SinkDrop,
    TriggerCheck,
)

if TYPE_CHECKING:  # only named here: importing them would load aiohttp and httpx for `status`
    from trigger_engine.delivery.dispatcher import DrainReport
    from trigger_engine.polling.backfill import BackfillStep


def _text(lines: Sequence[str]) -> str:
    """Lines of text output, each escaped (one line stays one line), joined."""
    return "\n".join(escape_controls(line) for line in lines)


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
