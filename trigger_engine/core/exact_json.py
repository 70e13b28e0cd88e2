"""JSON text that keeps every value exact. Pure.

orjson is fast but refuses some values that real APIs send: integers beyond 64 bits,
strings holding a lone UTF-16 surrogate (a name cut in the middle of an emoji), and
structures nested deeper than 255 levels. The standard library's ``json`` takes them all
(integers of any size, surrogates escaped as ``\\udXXX``), so it is the fallback: the fast
path costs nothing extra, and no value is ever rounded, dropped or refused for its form.
The fallback writes ASCII only, so its text can always be stored (no lone surrogate
reaches a database driver).
"""

from __future__ import annotations

import json
from typing import Any

import orjson


class Unencodable(ValueError):
    """A value that even the standard library cannot write as JSON (too deeply nested)."""


def dumps(value: Any, *, sort_keys: bool = False) -> str:
    """Compact JSON text of ``value``: orjson's, or the standard library's where orjson
    refuses it (the same text for everything both accept, but non-ASCII escaped)."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS if sort_keys else None).decode()
    except orjson.JSONEncodeError:
        pass
    try:
        return json.dumps(value, separators=(",", ":"), sort_keys=sort_keys, ensure_ascii=True)
    except RecursionError:
        raise Unencodable("it is nested too deeply to be written as JSON") from None
    except (TypeError, ValueError) as exc:
        raise Unencodable(f"it cannot be written as JSON ({exc})") from None
