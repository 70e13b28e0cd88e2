"""Tests for trigger_engine.cli.progress: off a terminal, long work logs a ``progress`` line
every few seconds and one at its end, short work says nothing; on a terminal, a live display
that is gone at the end."""

from __future__ import annotations

import io
import logging

import pytest

from trigger_engine.cli.progress import LogProgress, RichProgress, progress


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "trigger_engine.progress"]


def test_long_work_logs_every_few_seconds_and_at_its_end(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    clock = Clock()
    report = LogProgress(every=5.0, monotonic=clock)
    for done in range(0, 1001):
        clock.t += 0.012  # 12 s in all
        report("deliveries", done, 1000)
    assert len(lines(caplog)) == 3  # at 5 s, at 10 s, and at the end
    last = lines(caplog)[-1]
    assert last.getMessage() == "progress"
    assert last.te_context == {"work": "deliveries", "done": 1000, "total": 1000}  # type: ignore[attr-defined]


def test_short_work_is_quiet(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    clock = Clock()
    report = LogProgress(every=5.0, monotonic=clock)
    for done in range(4):
        clock.t += 0.5
        report("polls", done, 3)
    assert lines(caplog) == []


def test_off_a_terminal_the_reporter_logs() -> None:
    with progress(io.StringIO()) as report:
        assert isinstance(report, LogProgress)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_a_display_shows_and_goes() -> None:
    out = Terminal()
    with progress(out) as report:
        assert isinstance(report, RichProgress)
        report("deliveries", 5, 10)
        report("deliveries", 10, 10)
    assert "deliveries" in out.getvalue()  # drawn at least once (when it stopped)
