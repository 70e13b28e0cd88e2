"""The pure selection and presentation helpers behind events, replay and status."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from trigger_engine.cli.render import event_line, status_text
from trigger_engine.config import config_from_dict
from trigger_engine.core.filters import build_filter, parse_time
from trigger_engine.errors import UsageError
from trigger_engine.runtime.views import TriggerRow, event_dict, safe_url, trigger_rows
from trigger_engine.types import DeliveryView, EventView, PollState

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2h", NOW - timedelta(hours=2)),
        ("30m", NOW - timedelta(minutes=30)),
        ("7d", NOW - timedelta(days=7)),
        ("90", NOW - timedelta(seconds=90)),
        ("2026-11-27T10:00:00Z", datetime(2026, 11, 27, 10, 0, tzinfo=UTC)),
        ("2026-11-27T11:00:00+01:00", datetime(2026, 11, 27, 10, 0, tzinfo=UTC)),
        ("2026-11-27T10:00:00", datetime(2026, 11, 27, 10, 0, tzinfo=UTC)),
        ("2026-11-26", datetime(2026, 11, 26, tzinfo=UTC)),
    ],
)
def test_parse_time(text: str, expected: datetime) -> None:
    assert parse_time(text, NOW, option="--since") == expected


@pytest.mark.parametrize("text", ["yesterday", "2026-13-01", "-2h", ""])
def test_parse_time_rejects_with_the_option_named(text: str) -> None:
    with pytest.raises(UsageError, match="--until"):
        parse_time(text, NOW, option="--until")


def test_build_filter_checks_statuses_and_order() -> None:
    with pytest.raises(UsageError, match="--status 'sent' is not one of pending"):
        build_filter(now=NOW, statuses=("sent",))
    with pytest.raises(UsageError, match="must be earlier"):
        build_filter(now=NOW, since="1h", until="2h")
    f = build_filter(now=NOW, since="2h", until="1h", statuses=("dead",), types=("lead.new",))
    assert (f.since, f.until, f.statuses, f.types) == (
        NOW - timedelta(hours=2),
        NOW - timedelta(hours=1),
        ("dead",),
        ("lead.new",),
    )


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "https://hooks.zapier.com/hooks/catch/1/abc?token=s3cret",
            "https://hooks.zapier.com/hooks/catch/1/abc",
        ),
        ("http://user:pw@127.0.0.1:8080/hook", "http://127.0.0.1:8080/hook"),
    ],
)
def test_safe_url_drops_query_and_credentials(url: str, shown: str) -> None:
    assert safe_url(url) == shown


def state(**kw: object) -> PollState:
    base: dict[str, object] = {
        "account": "acme",
        "trigger": "leads",
        "seeded_at": NOW,
        "last_poll_at": NOW,
        "last_outcome": "ok",
        "last_error": None,
        "last_success_at": NOW,
        "consecutive_failures": 0,
        "backoff_until": None,
        "paused": False,
        "paused_reason": None,
        "items_known": 3,
    }
    base.update(kw)
    return PollState(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("row", "label"),
    [
        (TriggerRow("acme", "leads", False, state()), "disabled in config"),
        (
            TriggerRow("acme", "leads", True, state(paused=True, paused_reason="5 failures")),
            "paused: 5 failures",
        ),
        (
            TriggerRow(
                "acme",
                "leads",
                True,
                state(backoff_until=NOW + timedelta(minutes=5), consecutive_failures=2),
            ),
            "backing off until 2026-11-27T12:05:00Z after 2 polls failed",
        ),
        (
            TriggerRow("acme", "leads", True, state(backoff_until=NOW - timedelta(minutes=5))),
            "active",
        ),
        (TriggerRow("acme", "leads", True, None), "not polled yet"),
        (  # failing for 20 minutes, over 3 intervals of 5 minutes: failing, not backing off
            TriggerRow(
                "acme",
                "leads",
                True,
                state(
                    backoff_until=NOW + timedelta(minutes=5),
                    consecutive_failures=4,
                    failing_since=NOW - timedelta(minutes=20),
                    last_outcome="store",
                ),
                interval=300,
            ),
            "failing since 2026-11-27T11:40:00Z (4 polls in a row; the database failed them)",
        ),
        (  # failing for 10 minutes: still under 3 intervals
            TriggerRow(
                "acme",
                "leads",
                True,
                state(
                    backoff_until=NOW + timedelta(minutes=5),
                    consecutive_failures=1,
                    failing_since=NOW - timedelta(minutes=10),
                    last_outcome="transient",
                ),
                interval=300,
            ),
            "backing off until 2026-11-27T12:05:00Z after 1 poll failed",
        ),
    ],
)
def test_trigger_labels(row: TriggerRow, label: str) -> None:
    assert row.label(NOW) == label


def test_trigger_rows_cover_every_configured_pair_and_status_text_shows_errors() -> None:
    config = config_from_dict(
        {
            "accounts": [{"name": "acme", "api_key": "k1"}, {"name": "globex", "api_key": "k2"}],
            "triggers": {"leads": {}, "campaigns": {"enabled": False}},
        }
    )
    failing = state(account="globex", last_outcome="auth", last_error="key refused")
    rows = trigger_rows(config, [failing])
    assert [(r.account, r.trigger, r.state is not None) for r in rows] == [
        ("acme", "leads", False),
        ("acme", "campaigns", False),
        ("globex", "leads", True),
        ("globex", "campaigns", False),
    ]
    text = status_text({"triggers": [r.as_dict(NOW) for r in rows], "sinks": []})
    assert "globex/leads: active; last poll 2026-11-27T12:00:00Z (auth)" in text
    assert "last error: key refused" in text
    assert "(none configured)" in text


HOSTILE = "k\n2026-01-01T00:00:00Z ERROR forged\x1b]0;pwned\x07\x1b[2J"
HOSTILE_SHOWN = "k\\n2026-01-01T00:00:00Z ERROR forged\\x1b]0;pwned\\x07\\x1b[2J"


def test_text_output_escapes_what_others_wrote_and_json_keeps_it_exact() -> None:
    failed = DeliveryView("crm", "failed", 1, False, NOW, None, "bad\x1b[2J", NOW, None)
    event = EventView("evt_1", "lead.new", "acme", "leads", HOSTILE, NOW, (failed,))
    line = event_line(event)
    assert line.splitlines() == [line]
    assert f"key={HOSTILE_SHOWN}  crm: failed (1 attempt, last: bad\\x1b[2J" in line
    assert "\x1b" not in line
    assert event_dict(event)["key"] == HOSTILE
    assert event_dict(event)["deliveries"][0]["last_error"] == "bad\x1b[2J"

    config = config_from_dict(
        {"accounts": [{"name": "acme", "api_key": "k"}], "triggers": {"leads": {}}}
    )
    rows = trigger_rows(
        config, [state(last_outcome="bad_body", last_error=f"not JSON ({HOSTILE})")]
    )
    text = status_text({"triggers": [r.as_dict(NOW) for r in rows], "sinks": []})
    assert f"last error: not JSON ({HOSTILE_SHOWN})" in text
    assert len(text.splitlines()) == 5  # TRIGGERS, the trigger, its error, SINKS, (none)
    paused = TriggerRow("acme", "leads", True, state(paused=True, paused_reason=HOSTILE))
    assert paused.line(NOW) == f"acme/leads: paused: {HOSTILE_SHOWN} (3 items known)"


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        # active: its last poll plus its interval
        (TriggerRow("acme", "leads", True, state(), interval=300), NOW + timedelta(minutes=5)),
        # backing off past that: the end of the backoff
        (
            TriggerRow(
                "acme", "leads", True, state(backoff_until=NOW + timedelta(hours=1)), interval=300
            ),
            NOW + timedelta(hours=1),
        ),
        # a backoff that ends before the interval does: the interval
        (
            TriggerRow(
                "acme", "leads", True, state(backoff_until=NOW + timedelta(minutes=1)), interval=300
            ),
            NOW + timedelta(minutes=5),
        ),
        (TriggerRow("acme", "leads", True, state(paused=True), interval=300), None),
        (TriggerRow("acme", "leads", False, state(), interval=300), None),
        (TriggerRow("acme", "leads", True, None, interval=300), None),
    ],
)
def test_next_poll_at_is_expected_from_the_last_poll_the_interval_and_the_backoff(
    row: TriggerRow, expected: datetime | None
) -> None:
    assert row.next_poll_at(NOW) == expected
    shown = row.as_dict(NOW)["next_poll_at"]
    assert shown == (None if expected is None else expected.strftime("%Y-%m-%dT%H:%M:%SZ"))
