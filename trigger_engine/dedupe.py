"""New-versus-seen decisions. Pure: plain data in, plain data out.

The store holds the seen set; this module decides, for one poll's items, which keys are
candidates (first occurrence in the response, usable key), which items are skipped for
want of a key, and which of the candidates are new given the keys already seen.
The store's unique constraint on (account, trigger, key) stays the last guard.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from trigger_engine.keys import item_key, missing_field


@dataclass(frozen=True)
class KeyedItems:
    """One response, keyed: first occurrence of each key, in response order."""

    keys: tuple[str, ...]
    items: tuple[Any, ...]
    duplicates: int  # items whose key appeared earlier in the same response
    keyless: int  # items without a usable key: skipped, never fired
    keyless_field: str  # the key field the first keyless item lacked ("" if none)


def key_items(items: Sequence[Any], fields: Sequence[str]) -> KeyedItems:
    keys: list[str] = []
    kept: list[Any] = []
    index: set[str] = set()
    duplicates = keyless = 0
    keyless_field = ""
    for item in items:
        key = item_key(item, fields)
        if key is None:
            if not keyless:
                keyless_field = missing_field(item, fields)
            keyless += 1
        elif key in index:
            duplicates += 1
        else:
            index.add(key)
            keys.append(key)
            kept.append(item)
    return KeyedItems(tuple(keys), tuple(kept), duplicates, keyless, keyless_field)


def unseen(keyed: KeyedItems, seen: Iterable[str]) -> list[tuple[str, Any]]:
    """(key, item) pairs not in ``seen``, oldest first.

    APIs list newest first (Zapier's convention), so the response is reversed: events
    are created, and delivered, in the order the items appeared upstream.
    """
    known = seen if isinstance(seen, set | frozenset) else set(seen)
    return [
        (key, item)
        for key, item in zip(reversed(keyed.keys), reversed(keyed.items), strict=True)
        if key not in known
    ]
