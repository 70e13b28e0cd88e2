"""Tests for trigger_engine.core.keys: item → primary key (single, dotted, composite)."""

from __future__ import annotations

from typing import Any

import pytest

from trigger_engine.core.keys import item_key, missing_field


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
