"""Durations as people write them ("500ms", "30s", "5m", "2h", "1d", "1h30m" or seconds). Pure."""

from __future__ import annotations

import math
import re
from typing import NamedTuple

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
SECOND, MINUTE, HOUR, DAY = _UNITS["s"], _UNITS["m"], _UNITS["h"], _UNITS["d"]
_DURATION_PART = r"(\d+(?:\.\d+)?|\.\d+)(ms|s|m|h|d)"
_DURATION_RE = re.compile(rf"(?:{_DURATION_PART})+")
_NUMBER_RE = re.compile(r"\d+(?:\.\d*)?|\.\d+")
_DURATION_HINT = '(use e.g. "30s", "5m", "2h" or a number of seconds)'


def show(value: object) -> str:
    """A short, TOML-ish rendering of a (non-secret) value for an error message; the
    configuration's messages use it too."""
    if isinstance(value, bool):
        return "true" if value else "false"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def parse_duration(value: object) -> float:
    """Seconds from ``"500ms"``, ``"30s"``, ``"5m"``, ``"2h"``, ``"1d"``, ``"1h30m"`` or a number.

    Raises ``ValueError`` with a short reason for anything else, including negative values.
    Zero is returned as ``0.0``; fields that need a positive duration check that themselves.
    """
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"invalid duration {show(value)} {_DURATION_HINT}")
    try:
        if isinstance(value, str):
            text = value.strip()
            sign = -1.0 if text.startswith("-") else 1.0
            body = text[1:].lstrip() if text[:1] in "+-" else text
            if _NUMBER_RE.fullmatch(body):
                seconds = sign * float(body)
            elif body and _DURATION_RE.fullmatch(body):
                parts = re.findall(_DURATION_PART, body)
                seconds = sign * sum(float(n) * _UNITS[unit] for n, unit in parts)
            else:
                raise ValueError(f"invalid duration {show(value)} {_DURATION_HINT}")
        else:
            seconds = float(value)
    except OverflowError:
        raise ValueError(f"invalid duration {show(value)}: it is too large") from None
    if not math.isfinite(seconds):
        raise ValueError(f"invalid duration {show(value)}: it must be a finite number of seconds")
    if seconds < 0:
        raise ValueError(f"invalid duration {show(value)}: it must not be negative")
    return seconds


def format_duration(seconds: float) -> str:
    """``seconds`` as the largest unit that divides it evenly: ``"30d"``, ``"1h"``,
    ``"90s"``, ``"100ms"`` (``"0.0005s"`` when no unit does); parse_duration reads it back."""
    for unit in ("d", "h", "m", "s", "ms"):
        count = seconds / _UNITS[unit]
        if count >= 1 and math.isclose(count, round(count), rel_tol=0, abs_tol=1e-9):
            return f"{round(count)}{unit}"
    return "0s" if seconds == 0 else f"{seconds:g}s"


class DurationRange(NamedTuple):
    """The durations a setting or an option accepts: ``low`` to ``high`` seconds, both
    included, and more than zero when ``positive``.

    Every duration has an upper bound so that nothing computed from it later (a
    ``timedelta``, a deadline, a ``datetime`` in the future or the past) can overflow: a
    value out of range is refused when it is read, with a sentence that gives the range.

    A named tuple (frozen, as a value should be), not a dataclass: the command line's
    parser builds its options with these, and ``--help`` then needs neither ``dataclasses``
    nor the ``inspect`` it imports (issue 16).
    """

    high: float
    low: float = 0.0
    positive: bool = False

    def describe(self) -> str:
        """The range in words: ``"from 100ms to 30d"``, ``"greater than zero and at most
        1h"``, ``"of at most 1h"``."""
        if self.low > 0:
            return f"from {format_duration(self.low)} to {format_duration(self.high)}"
        if self.positive:
            return f"greater than zero and at most {format_duration(self.high)}"
        return f"of at most {format_duration(self.high)}"

    def check(self, value: object) -> float:
        """Seconds from ``value`` (as :func:`parse_duration` reads it), within the range;
        ``ValueError`` with a short reason otherwise."""
        seconds = parse_duration(value)
        if self.positive and seconds == 0:
            raise ValueError("must be a duration greater than zero")
        if not self.low <= seconds <= self.high:
            raise ValueError(f"must be a duration {self.describe()}")
        return seconds
