"""A trigger's dedupe definition and its fingerprint. Pure.

What a trigger's seen keys mean depends on where its items come from and how they are
keyed: ``path``, ``key``, ``items_path``, ``params``, and for an "updated item" trigger the
``update_fields`` its versions are made of. When any of them changes, the keys remembered
so far no longer describe the items listed now (a new key field gives every item a new
key; a new path lists other items), so the next poll is a first poll again: it remembers
what it lists and fires nothing (:mod:`trigger_engine.db.polls`).

The fingerprint is stored with the trigger's poll state. It holds a short hash of the
whole definition and one of each part, so that a change can be named (``key``,
``params``) without storing the values themselves.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import orjson

# The parts of a definition, in the order they are fingerprinted and named.
PARTS = ("path", "key", "items_path", "params", "update_fields")

_DIGEST_HEX = 16  # the whole definition: 64 bits
_PART_HEX = 8  # each part: enough to tell a change, no more


def _hash(value: object, size: int) -> str:
    text = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(text).hexdigest()[:size]


@dataclass(frozen=True)
class DefinitionPrint:
    """A definition's fingerprint: ``digest`` of the whole, ``parts`` one hash per part."""

    digest: str
    parts: tuple[tuple[str, str], ...]  # (part name, its hash), in PARTS order

    def encode(self) -> str:
        """The stored form: ``DIGEST;path=HASH,key=HASH,...`` (under 120 characters)."""
        return self.digest + ";" + ",".join(f"{name}={h}" for name, h in self.parts)

    @classmethod
    def decode(cls, text: str) -> DefinitionPrint:
        """The stored form read back; a bare digest (or anything else) has no parts."""
        digest, _, rest = text.partition(";")
        parts = tuple((name, h) for name, _, h in (p.partition("=") for p in rest.split(",") if p))
        return cls(digest, parts)


def definition_print(
    *,
    path: str,
    key: Sequence[str],
    items_path: str | None,
    params: Mapping[str, str],
    update_fields: Sequence[str] | None,
) -> DefinitionPrint:
    """The fingerprint of one trigger's dedupe definition: stable across runs, processes
    and Python versions (canonical JSON, SHA-256), and different when any part differs.
    The order of ``key`` and of ``update_fields`` counts (a composite key's JSON and an
    item's version follow it); the order of ``params`` does not."""
    values: dict[str, object] = {
        "path": path,
        "key": list(key),
        "items_path": items_path,
        "params": dict(params),
        "update_fields": None if update_fields is None else list(update_fields),
    }
    parts = tuple((name, _hash(values[name], _PART_HEX)) for name in PARTS)
    return DefinitionPrint(_hash(values, _DIGEST_HEX), parts)


def redefined(stored: str | None, current: DefinitionPrint) -> bool:
    """Whether the trigger's definition changed since ``stored`` was written. None (a
    trigger polled before fingerprints were stored, or never polled) is no change: an
    upgraded database adopts the definition it runs with, without a re-seed."""
    return stored is not None and DefinitionPrint.decode(stored).digest != current.digest


def changed_parts(stored: str, current: DefinitionPrint) -> tuple[str, ...]:
    """The parts that differ between ``stored`` and ``current`` (empty when it cannot be
    told: a stored form without parts)."""
    old = dict(DefinitionPrint.decode(stored).parts)
    return tuple(name for name, h in current.parts if name in old and old[name] != h)
