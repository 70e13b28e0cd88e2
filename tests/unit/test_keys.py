"""Tests for trigger_engine.core.keys: item → primary key (single, dotted, composite), exact
at any size, and stored the same way on every database."""

from __future__ import annotations

import json
from typing import Any

import pytest

from trigger_engine.core.exact_json import Unencodable, dumps
from trigger_engine.core.keys import (
    HASHED_PREFIX,
    MAX_STORED_KEY_BYTES,
    fingerprint,
    item_key,
    lookup_key,
    missing_field,
    storable_key,
)


@pytest.mark.parametrize(
    ("item", "fields", "expected"),
    [
        pytest.param({"id": "abc"}, ("id",), "abc", id="single-string"),
        pytest.param({"id": "abc", "other": 1}, ("id",), "abc", id="other-fields-ignored"),
        pytest.param({"key": 46}, ("key",), "46", id="campaign-integer-key"),
        pytest.param({"id": 0}, ("id",), "0", id="zero-is-a-key"),
        pytest.param({"id": -7}, ("id",), "-7", id="negative-int"),
        pytest.param({"id": 1.5}, ("id",), "1.5", id="float"),
        pytest.param({"id": " x "}, ("id",), " x ", id="string-kept-verbatim"),
        pytest.param({"person": {"key": "p-1"}}, ("person.key",), "p-1", id="dotted"),
        pytest.param({"a": {"b": {"c": 7}}}, ("a.b.c",), "7", id="dotted-deep-int"),
        pytest.param({"a": "x", "b": "y"}, ("a", "b"), '["x","y"]', id="composite"),
        pytest.param({"a": "x", "b": 1}, ("a", "b"), '["x",1]', id="composite-mixed"),
        pytest.param(
            {"campaign": 3, "person": {"id": "p"}},
            ("campaign", "person.id"),
            '[3,"p"]',
            id="composite-dotted",
        ),
        pytest.param({"id": "é"}, ("id",), "é", id="non-ascii"),
    ],
)
def test_item_key(item: dict[str, Any], fields: tuple[str, ...], expected: str) -> None:
    assert item_key(item, fields) == expected
    assert missing_field(item, fields) == ""


@pytest.mark.parametrize(
    ("item", "fields", "culprit"),
    [
        pytest.param({}, ("id",), "id", id="missing"),
        pytest.param({"id": None}, ("id",), "id", id="none"),
        pytest.param({"id": ""}, ("id",), "id", id="empty-string"),
        pytest.param({"id": "   "}, ("id",), "id", id="blank-string"),
        pytest.param({"id": True}, ("id",), "id", id="bool-true"),
        pytest.param({"id": False}, ("id",), "id", id="bool-false"),
        pytest.param({"id": {"x": 1}}, ("id",), "id", id="dict"),
        pytest.param({"id": [1]}, ("id",), "id", id="list"),
        pytest.param({"id": []}, ("id",), "id", id="empty-list"),
        pytest.param({"person": {}}, ("person.key",), "person.key", id="dotted-leaf-missing"),
        pytest.param({"person": "p"}, ("person.key",), "person.key", id="dotted-parent-scalar"),
        pytest.param({"person": None}, ("person.key",), "person.key", id="dotted-parent-none"),
        pytest.param({"person.key": "p"}, ("person.key",), "person.key", id="literal-dot-name"),
        pytest.param({"a": "x"}, ("a", "b"), "b", id="composite-second-missing"),
        pytest.param({"b": "y"}, ("a", "b"), "a", id="composite-first-missing"),
        pytest.param({"a": None, "b": None}, ("a", "b"), "a", id="composite-first-culprit"),
        pytest.param({"a": "x", "b": False}, ("a", "b"), "b", id="composite-bool"),
    ],
)
def test_unusable_key_gives_none_and_names_the_field(
    item: dict[str, Any], fields: tuple[str, ...], culprit: str
) -> None:
    assert item_key(item, fields) is None
    assert missing_field(item, fields) == culprit


@pytest.mark.parametrize(
    "item",
    [
        pytest.param(None, id="none"),
        pytest.param("abc", id="string"),
        pytest.param(46, id="int"),
        pytest.param(["id", "x"], id="list"),
        pytest.param([{"id": "x"}], id="list-of-dict"),
    ],
)
@pytest.mark.parametrize("fields", [("id",), ("id", "name")])
def test_non_object_item_has_no_key(item: Any, fields: tuple[str, ...]) -> None:
    assert item_key(item, fields) is None
    assert missing_field(item, fields) == "(item is not an object)"


@pytest.mark.parametrize(
    ("first", "second"),
    [
        pytest.param(
            ({"a": "x", "b": "y"}, ("a", "b")),
            ({"a": "x,y"}, ("a",)),
            id="composite-vs-single-with-comma",
        ),
        pytest.param(
            ({"a": "x,y", "b": "z"}, ("a", "b")),
            ({"a": "x", "b": "y,z"}, ("a", "b")),
            id="comma-inside-composite-parts",
        ),
        pytest.param(
            ({"a": "1", "b": "x"}, ("a", "b")),
            ({"a": 1, "b": "x"}, ("a", "b")),
            id="composite-string-vs-int",
        ),
        pytest.param(
            ({"a": "x", "b": "y"}, ("a", "b")),
            ({"a": "y", "b": "x"}, ("a", "b")),
            id="composite-order-matters",
        ),
        pytest.param(({"id": 1}, ("id",)), ({"id": 1.5}, ("id",)), id="int-vs-float"),
        pytest.param(({"id": "a"}, ("id",)), ({"id": "A"}, ("id",)), id="case-sensitive"),
    ],
)
def test_keys_are_unambiguous(
    first: tuple[dict[str, Any], tuple[str, ...]],
    second: tuple[dict[str, Any], tuple[str, ...]],
) -> None:
    key1 = item_key(*first)
    key2 = item_key(*second)
    assert key1 is not None
    assert key2 is not None
    assert key1 != key2


def test_same_item_same_key() -> None:
    """Keys are stable: the seen table depends on an item keying the same way each poll."""
    item = {"b": 2, "a": "x", "person": {"id": 9}}
    reordered = {"person": {"id": 9}, "a": "x", "b": 2}
    fields = ("a", "person.id")
    assert item_key(item, fields) == item_key(reordered, fields) == '["x",9]'


# ----------------------------------------------------------------------- exact identity


@pytest.mark.parametrize(
    ("item", "fields", "key"),
    [
        ({"id": 2**64 + 1}, ["id"], "18446744073709551617"),  # exact, not a float
        ({"id": 2**64 + 2}, ["id"], "18446744073709551618"),
        ({"id": -(2**80)}, ["id"], str(-(2**80))),
        ({"id": 2}, ["id"], "2"),  # 2 and "2" are one key (Zapier compares strings)
        ({"id": "2"}, ["id"], "2"),
        ({"a": 2**70, "b": "x"}, ["a", "b"], '[1180591620717411303424,"x"]'),
        ({"a": "\ud83d", "b": 1}, ["a", "b"], '["\\ud83d",1]'),  # a lone surrogate, escaped
        ({"a": 2, "b": "x"}, ["a", "b"], '[2,"x"]'),  # composite keys keep their types
        ({"a": "2", "b": "x"}, ["a", "b"], '["2","x"]'),
    ],
)
def test_keys_are_exact(item: dict[str, Any], fields: list[str], key: str) -> None:
    assert item_key(item, fields) == key


@pytest.mark.parametrize(
    ("key", "stored"),
    [
        ("lead-1", "lead-1"),
        ("é" * 200, "é" * 200),  # 400 UTF-8 bytes: as is
        ("~tilde", "~tilde"),
        ("a\x00b", '~json:"a\\u0000b"'),
        ("cut \ud83d", '~json:"cut \\ud83d"'),
        ("~json:x", '~json:"~json:x"'),  # a reserved prefix is never stored as is
        ("~sha256:x", '~json:"~sha256:x"'),
    ],
)
def test_storable_key(key: str, stored: str) -> None:
    assert storable_key(key) == stored
    assert lookup_key(stored) == stored  # the stored form, copied from `events`, finds it
    if not key.startswith(("~json:", "~sha256:")):  # typed as is, they read as stored forms
        assert lookup_key(key) == stored


def test_long_keys_are_hashed_and_stay_distinct() -> None:
    a, b = storable_key("x" * 600), storable_key("x" * 599 + "y")
    assert a.startswith(HASHED_PREFIX) and b.startswith(HASHED_PREFIX)
    assert a != b
    assert len(a.encode()) <= MAX_STORED_KEY_BYTES
    assert storable_key("é" * 300).startswith(HASHED_PREFIX)  # 600 bytes, not 300 chars


def test_fingerprint_is_stable_and_walks_any_depth() -> None:
    deep: Any = 1
    for _ in range(50_000):  # far beyond the recursion limit
        deep = [deep]
    assert fingerprint(deep) == fingerprint(deep)
    assert fingerprint({"a": 1}) != fingerprint({"a": 2})
    assert fingerprint({"a": [1, 2]}) != fingerprint({"a": [2, 1]})


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ({"a": 1, "b": [True, None]}, '{"a":1,"b":[true,null]}'),  # orjson's own text
        ({"n": 2**64}, '{"n":18446744073709551616}'),
        ({"s": "\ud83d!"}, '{"s":"\\ud83d!"}'),
        ({"s": "é\ud83d"}, '{"s":"\\u00e9\\ud83d"}'),  # the fallback writes ASCII
    ],
)
def test_exact_json_dumps(value: Any, text: str) -> None:
    assert dumps(value) == text
    assert json.loads(text) == value


def test_exact_json_refuses_only_what_no_encoder_writes() -> None:
    deep: Any = 1
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(Unencodable, match="nested too deeply"):
        dumps(deep)
