"""Item → primary key. Pure.

A key is one field or several (a composite key, Zapier's ``primary`` fields), each
possibly nested with dots (``person.key``). The key of an item is a string: the value
itself for a single string field, else a compact JSON rendering, so that the key
``46`` (a campaign's integer key) and a composite ``["a", 1]`` stay unambiguous.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

_MISSING = object()


def lookup(item: Mapping[str, Any], dotted: str) -> Any:
    """The value at a dotted path, or ``_MISSING``."""
    value: Any = item
    for part in dotted.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _usable(value: Any) -> bool:
    if value is _MISSING or value is None or isinstance(value, bool):
        return False
    if isinstance(value, str):
        return value.strip() != ""
    return isinstance(value, int | float)


def item_key(item: Any, fields: Sequence[str]) -> str | None:
    """The item's key, or None when the item is not an object or a key field is missing,
    null, empty, or not a scalar (such an item cannot be deduplicated and is never fired)."""
    if len(fields) == 1 and type(item) is dict and "." not in fields[0]:
        # the common case (a top-level string id), without the general path's lists
        value = item.get(fields[0])
        if type(value) is str and value and not value[0].isspace() and not value[-1].isspace():
            return value
    if not isinstance(item, Mapping):
        return None
    values = [lookup(item, field) for field in fields]
    if not all(_usable(v) for v in values):
        return None
    if len(values) == 1:
        only = values[0]
        return only if isinstance(only, str) else orjson.dumps(only).decode()
    return orjson.dumps(values).decode()


def item_version(item: Mapping[str, Any], fields: Sequence[str]) -> str:
    """A fingerprint of the watched fields' values (missing counts as null), for "updated
    item" triggers: it changes exactly when one of those values changes."""
    values = [lookup(item, field) for field in fields]
    rendered = orjson.dumps(
        [None if v is _MISSING else v for v in values], option=orjson.OPT_SORT_KEYS
    )
    return hashlib.sha256(rendered).hexdigest()[:32]


def missing_field(item: Any, fields: Sequence[str]) -> str:
    """Which key field made ``item_key`` give None (for the warning that names it)."""
    if not isinstance(item, Mapping):
        return "(item is not an object)"
    for field in fields:
        if not _usable(lookup(item, field)):
            return field
    return ""
