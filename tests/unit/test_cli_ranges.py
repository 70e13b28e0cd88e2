"""Every option has a range: just inside is accepted, just outside is one sentence (exit 2)
naming the option and its range (issue 12: hostile input never crashes later)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.unit.test_config_ranges import (
    ACCOUNT_NAME_MAX,
    EVENT_TYPE_MAX,
    SINK_NAME_MAX,
    TRIGGER_NAME_MAX,
)
from trigger_engine.cli.main import build_parser
from trigger_engine.core.durations import show
from trigger_engine.core.filters import parse_time
from trigger_engine.errors import UsageError


def parse(*argv: str):  # type: ignore[no-untyped-def]
    return build_parser().parse_args(list(argv))


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (["events", "--limit", "1"], None),
        (["events", "--limit", "1000000"], None),
        (["events", "--limit", "1000001"], "argument --limit: '1000001' is outside 1-1000000"),
        (
            ["events", "--limit", "100000000000000000000000"],
            "argument --limit: '100000000000000000000000' is outside 1-1000000",
        ),
        (["events", "--limit", "0"], "argument --limit: '0' is not a positive whole number"),
        (["simulator", "--interval", "30d"], None),
        (["simulator", "--interval", "0"], None),
        (
            ["simulator", "--interval", "30d1s"],
            "argument --interval: '30d1s': must be a duration of at most 30d",
        ),
        (["demo", "--duration", "30d"], None),
        (
            ["demo", "--duration", "99999999999d"],
            "argument --duration: '99999999999d': must be a duration of at most 30d",
        ),
        (["events", "--account", "a" * ACCOUNT_NAME_MAX], None),
        (
            ["events", "--account", "a" * (ACCOUNT_NAME_MAX + 1)],
            f"argument --account: {show('a' * (ACCOUNT_NAME_MAX + 1))} is longer than "
            f"{ACCOUNT_NAME_MAX} characters, the most an account name may have",
        ),
        (["events", "--type", "t" * EVENT_TYPE_MAX], None),
        (
            ["events", "--type", "t" * (EVENT_TYPE_MAX + 1)],
            f"is longer than {EVENT_TYPE_MAX} characters, the most an event type may have",
        ),
        (["replay", "--since", "1h", "--sink", "s" * SINK_NAME_MAX], None),
        (
            ["replay", "--since", "1h", "--sink", "s" * (SINK_NAME_MAX + 1)],
            f"argument --sink: {show('s' * (SINK_NAME_MAX + 1))} is longer than "
            f"{SINK_NAME_MAX} characters",
        ),
        (["backfill", "--trigger", "t" * TRIGGER_NAME_MAX], None),
        (
            ["backfill", "--trigger", "t" * (TRIGGER_NAME_MAX + 1)],
            "the most a trigger name may have",
        ),
        (["sinks", "enable", "s" * (SINK_NAME_MAX + 1)], "argument NAME: "),
        (["sinks", "drop", "old", "--to", "s" * SINK_NAME_MAX], None),
        (["sinks", "drop", "old", "--to", "s" * (SINK_NAME_MAX + 1)], "argument --to: "),
        (["events", "--sink", "s" * (SINK_NAME_MAX + 1)], "argument --sink: "),
        (["triggers", "pause", "a" * (ACCOUNT_NAME_MAX + 1), "leads"], "argument ACCOUNT: "),
        (["triggers", "pause", "acme", "t" * (TRIGGER_NAME_MAX + 1)], "argument TRIGGER: "),
    ],
)
def test_command_line_ranges(argv: list[str], error: str | None) -> None:
    if error is None:
        parse(*argv)
        return
    with pytest.raises(UsageError) as info:
        parse(*argv)
    assert error in str(info.value)
    assert "\n" not in str(info.value)


NOW = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
TO_YEAR_1 = NOW - datetime(1, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"{int(TO_YEAR_1.total_seconds())}s", datetime(1, 1, 1, tzinfo=UTC)),
        ("0001-01-01", datetime(1, 1, 1, tzinfo=UTC)),
        ("9999-12-31T23:59:59Z", datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)),
        ("7d", NOW - timedelta(days=7)),
    ],
)
def test_times_at_the_ends_of_the_range(text: str, expected: datetime) -> None:
    assert parse_time(text, NOW, option="--since") == expected


@pytest.mark.parametrize(
    ("text", "error"),
    [
        (
            f"{int(TO_YEAR_1.total_seconds()) + 1}s",
            f"--since '{int(TO_YEAR_1.total_seconds()) + 1}s' reaches back before the year 1: "
            "give a shorter duration or an ISO 8601 time",
        ),
        (
            "99999999999d",
            "--since '99999999999d' reaches back before the year 1: give a shorter duration "
            "or an ISO 8601 time",
        ),
        ("1e308", "is neither an ISO 8601 time"),
        (
            "0001-01-01T00:00:00+01:00",
            "--since '0001-01-01T00:00:00+01:00' is outside the times it can name "
            "(years 1 to 9999, UTC)",
        ),
        ("9999-12-31T23:59:59-01:00", "is outside the times it can name (years 1 to 9999, UTC)"),
    ],
)
def test_times_outside_the_range(text: str, error: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_time(text, NOW, option="--since")
    assert error in str(info.value)
