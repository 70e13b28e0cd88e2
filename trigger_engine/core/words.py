"""Words for the command line's sentences: a count with its noun, a "did you mean".

Pure: values in, text out. ``plural`` keeps "1 delivery" and "2 deliveries" right wherever a
count is printed; ``did_you_mean`` is the hint a command adds when a name it was given
names nothing (difflib's closest match, as the configuration's unknown keys get).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

# Nouns whose plural is not the singular with an "s".
_IRREGULAR = {
    "delivery": "deliveries",
    "entry": "entries",
    "match": "matches",
}


def plural(n: int, one: str, many: str | None = None) -> str:
    """``n`` and the noun that goes with it: "1 delivery", "3 deliveries", "0 items".
    ``many`` defaults to the regular plural of ``one``."""
    if n == 1:
        return f"{n} {one}"
    return f"{n} {many if many is not None else plural_of(one)}"


def plural_of(noun: str) -> str:
    """The plural of an English ``noun`` as the engine's messages use them."""
    if noun in _IRREGULAR:
        return _IRREGULAR[noun]
    if noun.endswith(("s", "x", "ch", "sh")):
        return noun + "es"
    if noun.endswith("y") and noun[-2:-1] not in ("a", "e", "i", "o", "u"):
        return noun[:-1] + "ies"
    return noun + "s"


def closest(name: str, known: Iterable[str]) -> str | None:
    """The one of ``known`` closest to ``name`` (difflib's ratio of at least 0.6), if any."""
    found = difflib.get_close_matches(name, sorted(set(known)), n=1)
    return found[0] if found else None


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``known`` to ``name``, or ``""``."""
    match = closest(name, known)
    return f" (did you mean '{match}'?)" if match is not None else ""
