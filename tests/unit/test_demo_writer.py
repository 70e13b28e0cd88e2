"""The demo's line writer colours a terminal and nothing else (no rendering library needed)."""

from __future__ import annotations

import io

import pytest

from trigger_engine.sandbox.demo import LineWriter


class Terminal(io.StringIO):
    """A StringIO that says it is a terminal."""

    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def colour_friendly_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")


def written(out: io.StringIO) -> str:
    writer = LineWriter(out)
    writer.line("delivered", "green")
    writer.line("BAD SIGNATURE", "bold red")
    writer.line("plain")
    return out.getvalue()


def test_plain_when_the_output_is_not_a_terminal() -> None:
    assert written(io.StringIO()) == "delivered\nBAD SIGNATURE\nplain\n"


def test_coloured_on_a_terminal() -> None:
    assert written(Terminal()) == (
        "\x1b[32mdelivered\x1b[0m\n\x1b[1;31mBAD SIGNATURE\x1b[0m\nplain\n"
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [("NO_COLOR", "1"), ("NO_COLOR", "yes please"), ("TERM", "dumb"), ("TERM", "unknown")],
)
def test_plain_on_a_terminal_that_asks_for_no_colour(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    assert written(Terminal()) == "delivered\nBAD SIGNATURE\nplain\n"


def test_an_empty_no_color_does_not_turn_colour_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_COLOR", "")  # https://no-color.org: "present and not an empty string"
    assert written(Terminal()).startswith("\x1b[32mdelivered")
