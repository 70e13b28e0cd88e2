"""New-versus-seen decisions. Pure: plain data in, plain data out.

The store holds the seen set; this module decides, for one poll's items, which keys are
candidates (first occurrence in the response, usable key), which items are skipped for
want of a key, and which of the candidates are new given the keys already seen.
The store's unique constraint on (account, trigger, key) stays the last guard.

An item whose keying fails (rather than finding no key) is *quarantined*: set aside with
its reason, never a reason to fail the rest of the response.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from trigger_engine.core.keys import (
    fingerprint,
    item_key,
    item_version,
    missing_field,
    storable_key,
)


@dataclass(frozen=True)
class Quarantined:
    """An item set aside, with why: it is not marked seen, so later polls try it again."""

    key: str  # as stored (storable_key), or the item's fingerprint when keying failed
    reason: str


@dataclass(frozen=True)
class KeyedItems:
    """One response, keyed: first occurrence of each key, in response order."""

    keys: tuple[str, ...]
    items: tuple[Any, ...]
    duplicates: int  # items whose key appeared earlier in the same response
    keyless: int  # items without a usable key: skipped, never fired
    keyless_field: str  # the key field the first keyless item lacked ("" if none)
    versions: tuple[str, ...] | None = None  # for "updated item" triggers, per key
    quarantined: tuple[Quarantined, ...] = ()  # items whose keying failed


def key_items(
    items: Sequence[Any], fields: Sequence[str], update_fields: Sequence[str] | None = None
) -> KeyedItems:
    """Key one response: each key once, in response order; duplicates and keyless counted."""
    keys: list[str] = []
    kept: list[Any] = []
    index: set[str] = set()
    duplicates = keyless = 0
    keyless_field = ""
    quarantined: list[Quarantined] = []
    for item in items:
        try:
            key = item_key(item, fields)
        except Exception as exc:  # one item's failure is never the response's
            quarantined.append(Quarantined(fingerprint(item), f"cannot be keyed: {exc}"))
            continue
        if key is None:
            if not keyless:
                keyless_field = missing_field(item, fields)
            keyless += 1
            continue
        key = storable_key(key)
        if key in index:
            duplicates += 1
        else:
            index.add(key)
            keys.append(key)
            kept.append(item)
    versions = None
    if update_fields is not None:
        versions_list: list[str] = []
        for i in reversed(range(len(kept))):
            try:
                versions_list.append(item_version(kept[i], update_fields))
            except Exception as exc:
                quarantined.append(Quarantined(keys[i], f"cannot be versioned: {exc}"))
                del keys[i], kept[i]
        versions = tuple(reversed(versions_list))
    return KeyedItems(
        tuple(keys),
        tuple(kept),
        duplicates,
        keyless,
        keyless_field,
        versions,
        tuple(quarantined),
    )


def changed(
    keyed: KeyedItems, known: dict[str, str | None]
) -> list[tuple[str, Any, str, str | None]]:
    """For an "updated item" trigger: (key, item, new version, old version) of the items
    whose version differs from the one remembered, oldest first. Unknown keys are not
    changes (they are new items, another trigger's business) and are left out."""
    assert keyed.versions is not None, "key_items(..., update_fields=...) gives versions"
    return [
        (key, item, version, known[key])
        for key, item, version in zip(
            reversed(keyed.keys), reversed(keyed.items), reversed(keyed.versions), strict=True
        )
        if key in known and known[key] != version
    ]


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


def flood_guard(new_items: int, max_new: int | None) -> str | None:
    """Why a poll's events are held rather than sent (Zapier's hold on a poll with too
    many new items), or None: with ``max_new``, a poll firing more than that holds all."""
    if max_new is None or new_items <= max_new:
        return None
    return (
        f"held by the flood guard: {new_items} new items in one poll "
        f"(max_new_per_poll = {max_new}); release with 'trigger-engine replay --status held'"
    )
