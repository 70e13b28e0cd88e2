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


# --------------------------------------------------------------------------- keyless polls

# How many items the field summary of a keyless poll (and ``check``) looks at, and how many
# field names it shows at most, each cut to ``FIELD_NAME_SHOWN`` characters: a sentence
# for a person, whatever the upstream sends.
FIELD_SAMPLE = 100
FIELDS_SHOWN = 30
FIELD_NAME_SHOWN = 60


def too_keyless(keyless: int, total: int, *, first_poll: bool) -> bool:
    """Whether a poll whose ``keyless`` of ``total`` items have no usable key fails rather
    than going on: a first poll (which would seed) in which most items (over half) have
    none, or any poll in which every item has none (and there is at least one).

    A first poll that went on would remember only the keyed few and count as seeded; once
    the key is fixed, the next poll would fire every old item. A later poll that finds no
    key at all has nothing to compare, and a wrong key is far likelier than an upstream
    that dropped its ids from every item."""
    if total <= 0 or keyless <= 0:
        return False
    return keyless >= total or (first_poll and 2 * keyless > total)


@dataclass(frozen=True)
class FieldSummary:
    """The top-level fields of a response's first items: a sorted union, bounded."""

    names: tuple[str, ...]  # at most FIELDS_SHOWN, each at most FIELD_NAME_SHOWN characters
    more: bool  # more names than shown
    objects: int  # how many of the sampled items were objects

    def text(self) -> str:
        """``a, b, c`` (``, ...`` when cut), or why there are none."""
        if not self.objects:
            return "none (the items are not objects)"
        if not self.names:
            return "none (the items are empty objects)"
        return ", ".join(self.names) + (", ..." if self.more else "")


def top_level_fields(items: Sequence[Any], *, sample: int = FIELD_SAMPLE) -> FieldSummary:
    """The union of the top-level field names of the first ``sample`` items, sorted."""
    names: set[str] = set()
    objects = 0
    for item in items[:sample]:
        if isinstance(item, dict):
            objects += 1
            names.update(str(name) for name in item)
    ordered = sorted(names)
    shown = tuple(
        n if len(n) <= FIELD_NAME_SHOWN else n[: FIELD_NAME_SHOWN - 3] + "..."
        for n in ordered[:FIELDS_SHOWN]
    )
    return FieldSummary(shown, len(ordered) > FIELDS_SHOWN, objects)


def keyless_failure(
    keyed: KeyedItems, items: Sequence[Any], fields: Sequence[str], *, first_poll: bool
) -> str | None:
    """None when a poll of ``items`` (keyed as ``keyed`` by ``fields``) may go on; else why
    not, as the end of a sentence (the caller names the account and trigger first), e.g.
    ``27 of 27 items have no 'uuid' (the key); their fields: campaign_id, email, id``.
    See :func:`too_keyless` for when."""
    if not too_keyless(keyed.keyless, len(items), first_poll=first_poll):
        return None
    field = keyed.keyless_field if keyed.keyless_field in fields else fields[0]
    if len(fields) == 1:
        what = f"'{field}' (the key)"
    else:
        what = f"'{field}' (part of the key {', '.join(repr(f) for f in fields)})"
    noun = "item has" if len(items) == 1 else "items have"
    return (
        f"{keyed.keyless} of {len(items)} {noun} no {what}; "
        f"their fields: {top_level_fields(items).text()}"
    )
