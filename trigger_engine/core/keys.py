"""Item → primary key, and the key as the database stores it. Pure.

A key is one field or several (a composite key, Zapier's ``primary`` fields), each
possibly nested with dots (``person.key``). The key of an item is a string: the value
itself for a single string field, the exact digits of an integer (of any size), else a
compact JSON rendering, so that the key ``46`` (a campaign's integer key) and a composite
``["a", 1]`` stay unambiguous.

**``2`` and ``"2"`` are the same key** for a single key field, as in Zapier, which compares
keys as strings: an API that changes an id's JSON type does not fire every item again. In
a composite key the types count (``["a", 2]`` and ``["a", "2"]`` differ), as before.

:func:`storable_key` is what the database holds: the key itself when any database can
store and index it, else an escaped or hashed form that is the same on SQLite and
PostgreSQL and stays unique (see its docstring).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from trigger_engine.core.exact_json import dumps

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
        if isinstance(only, str):
            return only
        if isinstance(only, int):
            return str(only)  # exact at any size (orjson stops at 64 bits)
        return orjson.dumps(only).decode()
    return dumps(values)


def item_version(item: Mapping[str, Any], fields: Sequence[str]) -> str:
    """A fingerprint of the watched fields' values (missing counts as null), for "updated
    item" triggers: it changes exactly when one of those values changes."""
    values = [lookup(item, field) for field in fields]
    rendered = dumps([None if v is _MISSING else v for v in values], sort_keys=True)
    return hashlib.sha256(rendered.encode()).hexdigest()[:32]


def missing_field(item: Any, fields: Sequence[str]) -> str:
    """Which key field made ``item_key`` give None (for the warning that names it)."""
    if not isinstance(item, Mapping):
        return "(item is not an object)"
    for field in fields:
        if not _usable(lookup(item, field)):
            return field
    return ""


# The longest key stored as it is, in UTF-8 bytes: the seen set's primary key (account,
# trigger, key) must fit in a PostgreSQL B-tree entry (at most ~2,700 bytes).
MAX_STORED_KEY_BYTES = 512
ESCAPED_PREFIX = "~json:"  # a key the database cannot hold as is, as a JSON string literal
HASHED_PREFIX = "~sha256:"  # ... or, when that is too long, its SHA-256


def storable_key(key: str) -> str:
    """The key as the database holds it, the same on SQLite and PostgreSQL.

    The key itself, unless it holds a NUL (PostgreSQL's text refuses it) or a lone
    surrogate (no UTF-8 encoding exists), is longer than :data:`MAX_STORED_KEY_BYTES`, or
    starts with one of the two reserved prefixes. Then ``~json:`` and its JSON string
    literal (ASCII, readable), or ``~sha256:`` and the SHA-256 of that literal when even
    that is too long. Distinct keys stay distinct: a key stored as is never starts with a
    reserved prefix, JSON literals are one-to-one, and SHA-256 does not collide."""
    # the common case first: a short ASCII id
    if len(key) <= 64 and key.isascii() and "\x00" not in key and not key.startswith("~"):
        return key
    return _storable(key)


def lookup_key(text: str) -> str:
    """The stored form of a key a user typed (``events --key``): already a stored form
    when it starts with a reserved prefix (copied from ``events``), else its storable key."""
    return text if text.startswith((ESCAPED_PREFIX, HASHED_PREFIX)) else storable_key(text)


def _storable(key: str) -> str:
    try:
        size = len(key.encode())
    except UnicodeEncodeError:  # a lone surrogate
        size = -1
    if (
        0 <= size <= MAX_STORED_KEY_BYTES
        and "\x00" not in key
        and not key.startswith((ESCAPED_PREFIX, HASHED_PREFIX))
    ):
        return key
    literal = dumps(key)  # ASCII: NUL and surrogates escaped
    escaped = ESCAPED_PREFIX + literal
    if len(escaped.encode()) <= MAX_STORED_KEY_BYTES:
        return escaped
    return HASHED_PREFIX + hashlib.sha256(literal.encode()).hexdigest()


def fingerprint(item: Any) -> str:
    """A stable name for an item that has no usable key because keying it failed: the
    SHA-256 of its structure and scalars, walked without recursion (any depth)."""
    digest = hashlib.sha256()
    stack: list[Any] = [item]
    while stack:
        value = stack.pop()
        if isinstance(value, Mapping):
            digest.update(b"{%d" % len(value))
            for k, v in value.items():
                stack.append(v)
                stack.append(("key", k))
        elif isinstance(value, list):
            digest.update(b"[%d" % len(value))
            stack.extend(reversed(value))
        else:
            digest.update(repr(value).encode("utf-8", "surrogatepass") + b"\x00")
    return HASHED_PREFIX + digest.hexdigest()
