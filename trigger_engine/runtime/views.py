"""The JSON views of the engine's state that the CLI (``status --json``, ``events --json``,
``events show --json``) and the admin API (:mod:`trigger_engine.runtime.console`) share:
one shape for both, so a script can move from one to the other. Text rendering stays in
:mod:`trigger_engine.cli.render`."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
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
from trigger_engine.states import QUARANTINED, WAITING_STATUSES, DeliveryStatus, PollOutcome
from trigger_engine.types import (
    NODE_ALIVE_WITHIN,
    EventDetail,
    EventView,
    NodeView,
    PollState,
    QuarantineView,
    SinkStats,
)


def _text(lines: Sequence[str]) -> str:
    """Lines of text, each escaped (one line stays one line), joined."""
    return "\n".join(escape_controls(line) for line in lines)


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

    def next_poll_at(self, now: datetime) -> datetime | None:
        """When its next poll is expected: the end of its backoff, or its last poll plus
        its interval (the scheduler may run it a little later: spread, jitter, busy
        workers); ``None`` while it is disabled, paused or not polled yet."""
        s = self.state
        if not self.enabled or s is None or s.paused or s.last_poll_at is None:
            return None
        due = s.last_poll_at + timedelta(seconds=self.interval)
        if s.backoff_until is not None and s.backoff_until > due:
            return s.backoff_until
        return due

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
            "next_poll_at": _ts(self.next_poll_at(now)),
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


def payload_value(text: str) -> Any:
    """An event's stored payload (JSON text) as a value, exactly (integers of any size, a
    lone surrogate kept); the text itself if it does not parse."""
    try:
        return parse_json(text.encode("utf-8", "surrogatepass"))
    except ValueError:
        return text


def exact_json(value: Any) -> str:
    """``value`` as indented JSON that keeps every value exact (the standard library's
    writer: integers of any size), non-ASCII as it is, a lone surrogate as its ``\\u`` escape
    (``\\udc80``) (it could not be printed otherwise)."""
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
