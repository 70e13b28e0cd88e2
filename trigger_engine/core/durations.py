"""Durations as people write them ("500ms", "30s", "5m", "2h", "1d", "1h30m" or seconds). Pure."""

from __future__ import annotations

import math
import re

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
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
