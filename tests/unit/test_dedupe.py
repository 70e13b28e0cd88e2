"""Tests for trigger_engine.core.dedupe: one response keyed, then new-versus-seen."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest

from trigger_engine.core.dedupe import (
    FIELDS_SHOWN,
    KeyedItems,
    key_items,
    keyless_failure,
    too_keyless,
    top_level_fields,
    unseen,
)


def _ids(n: int) -> list[dict[str, Any]]:
    return [{"id": i} for i in range(n)]


@pytest.mark.parametrize(
    ("items", "keys", "duplicates", "keyless", "keyless_field"),
    [
        pytest.param([], (), 0, 0, "", id="empty"),
        pytest.param([{"id": "a"}, {"id": "b"}], ("a", "b"), 0, 0, "", id="all-distinct"),
        pytest.param(
            [{"id": "a"}, {"id": "b"}, {"id": "a"}], ("a", "b"), 1, 0, "", id="one-duplicate"
        ),
        pytest.param([{"id": "a"}] * 4, ("a",), 3, 0, "", id="same-item-four-times"),
        pytest.param([{"id": 1}, {"id": 1}, {"id": 2}], ("1", "2"), 1, 0, "", id="int-dupes"),
        pytest.param([{"id": None}, {"id": "a"}], ("a",), 0, 1, "id", id="one-keyless"),
        pytest.param(
            [{"x": 1}, {"id": ""}, {"id": "a"}, {"id": True}],
            ("a",),
            0,
            3,
            "id",
            id="several-keyless",
        ),
        pytest.param(
            ["not-an-object", {"id": None}],
            (),
            0,
            2,
            "(item is not an object)",
            id="first-culprit-is-non-object",
        ),
        pytest.param(
            [{"id": "a"}, {"id": "a"}, {}, {"id": "b"}, {}],
            ("a", "b"),
            1,
            2,
            "id",
            id="duplicates-and-keyless",
        ),
    ],
)
def test_key_items_counts(
    items: list[Any],
    keys: tuple[str, ...],
    duplicates: int,
    keyless: int,
    keyless_field: str,
) -> None:
    keyed = key_items(items, ("id",))
    assert keyed.keys == keys
    assert keyed.duplicates == duplicates
    assert keyed.keyless == keyless
    assert keyed.keyless_field == keyless_field
    assert len(keyed.items) == len(keyed.keys)
    assert len(keyed.keys) + duplicates + keyless == len(items)


def test_first_occurrence_of_a_duplicate_is_kept() -> None:
    first = {"id": "a", "name": "first"}
    later = {"id": "a", "name": "later"}
    keyed = key_items([first, {"id": "b"}, later], ("id",))
    assert keyed.items == (first, {"id": "b"})


def test_keyless_field_names_the_composite_culprit() -> None:
    items = [{"a": 1, "person": {}}, {"person": {"id": 2}}]
    keyed = key_items(items, ("a", "person.id"))
    assert keyed.keyless == 2
    assert keyed.keyless_field == "person.id"  # from the first keyless item, not the second


def test_composite_keys_dedupe_on_all_fields() -> None:
    items = [{"a": 1, "b": 1}, {"a": 1, "b": 2}, {"a": 1, "b": 1}]
    keyed = key_items(items, ("a", "b"))
    assert keyed.keys == ("[1,1]", "[1,2]")
    assert keyed.duplicates == 1


def _as_set(keys: list[str]) -> set[str]:
    return set(keys)


def _as_list(keys: list[str]) -> list[str]:
    return list(keys)


def _as_frozenset(keys: list[str]) -> frozenset[str]:
    return frozenset(keys)


def _as_generator(keys: list[str]) -> Iterable[str]:
    return (k for k in keys)


@pytest.mark.parametrize("container", [_as_set, _as_list, _as_frozenset, _as_generator])
@pytest.mark.parametrize(
    ("response_ids", "seen", "expected"),
    [
        pytest.param(["c", "b", "a"], [], ["a", "b", "c"], id="nothing-seen-oldest-first"),
        pytest.param(["c", "b", "a"], ["a", "b", "c"], [], id="all-seen"),
        pytest.param(["d", "c", "b", "a"], ["a", "b"], ["c", "d"], id="two-new-on-top"),
        pytest.param(["c", "b", "a"], ["b"], ["a", "c"], id="gap-in-the-middle"),
        pytest.param(["c", "b", "a"], ["x", "y"], ["a", "b", "c"], id="seen-unrelated"),
        pytest.param([], ["a"], [], id="empty-response"),
        pytest.param(["b", "a", "b"], [], ["a", "b"], id="duplicate-fired-once"),
    ],
)
def test_unseen_oldest_first(
    container: Any, response_ids: list[str], seen: list[str], expected: list[str]
) -> None:
    items = [{"id": i, "n": n} for n, i in enumerate(response_ids)]
    keyed = key_items(items, ("id",))
    result = unseen(keyed, container(seen))
    assert [key for key, _ in result] == expected
    for key, item in result:
        assert item["id"] == key
        # the first occurrence in the response is the one fired
        assert item["n"] == response_ids.index(key)


def test_unseen_returns_the_items_themselves() -> None:
    newest = {"id": 2, "name": "newest"}
    oldest = {"id": 1, "name": "oldest"}
    keyed = key_items([newest, oldest], ("id",))
    assert unseen(keyed, set()) == [("1", oldest), ("2", newest)]


def test_unseen_matches_rendered_keys() -> None:
    """Seen keys are the rendered strings: integer ids are known as "46", not 46."""
    keyed = key_items(_ids(3), ("id",))
    assert unseen(keyed, {"0", "2"}) == [("1", {"id": 1})]


def test_keyed_items_is_frozen() -> None:
    keyed = key_items(_ids(1), ("id",))
    assert isinstance(keyed, KeyedItems)
    with pytest.raises(AttributeError):
        keyed.duplicates = 5  # type: ignore[misc]


# ----------------------------------------------------------------- keyless polls


@pytest.mark.parametrize(
    ("keyless", "total", "first", "fails"),
    [
        pytest.param(0, 0, True, False, id="empty-first-poll"),
        pytest.param(0, 27, True, False, id="all-keyed"),
        pytest.param(27, 27, True, True, id="all-keyless-first"),
        pytest.param(27, 27, False, True, id="all-keyless-later"),
        pytest.param(1, 1, False, True, id="the-only-item-keyless"),
        pytest.param(14, 27, True, True, id="most-keyless-first"),
        pytest.param(14, 27, False, False, id="most-keyless-later"),
        pytest.param(5, 10, True, False, id="half-is-not-most"),
        pytest.param(6, 10, True, True, id="just-over-half"),
        pytest.param(1, 27, True, False, id="a-few-keyless-first"),
        pytest.param(26, 27, False, False, id="one-keyed-later"),
    ],
)
def test_when_keyless_items_fail_the_poll(
    keyless: int, total: int, first: bool, fails: bool
) -> None:
    assert too_keyless(keyless, total, first_poll=first) is fails


LEADS = [{"id": i, "email": f"{i}@x.test", "first_name": "A", "campaign_id": 3} for i in range(27)]


def test_a_wrong_key_names_the_field_and_the_fields_the_items_have() -> None:
    keyed = key_items(LEADS, ("uuid",))
    assert keyless_failure(keyed, LEADS, ("uuid",), first_poll=True) == (
        "27 of 27 items have no 'uuid' (the key); their fields: campaign_id, email, first_name, id"
    )
    assert keyless_failure(keyed, LEADS, ("uuid",), first_poll=False) is not None
    assert keyless_failure(key_items(LEADS, ("id",)), LEADS, ("id",), first_poll=True) is None


def test_a_composite_key_names_the_missing_part() -> None:
    items = [{"id": 1}, {"id": 2}, {"id": 3, "team": "a"}]
    keyed = key_items(items, ("id", "team"))
    assert keyless_failure(keyed, items, ("id", "team"), first_poll=True) == (
        "2 of 3 items have no 'team' (part of the key 'id', 'team'); their fields: id, team"
    )


def test_items_that_are_not_objects_say_so() -> None:
    items = ["a", "b"]
    message = keyless_failure(key_items(items, ("id",)), items, ("id",), first_poll=True)
    assert message == (
        "2 of 2 items have no 'id' (the key); their fields: none (the items are not objects)"
    )
    one = [{}]
    assert keyless_failure(key_items(one, ("id",)), one, ("id",), first_poll=False) == (
        "1 of 1 item has no 'id' (the key); their fields: none (the items are empty objects)"
    )


def test_the_field_summary_is_a_bounded_sorted_union_of_the_first_items() -> None:
    items = [{"b": 1}, {"a": 1, "c": 2}, "x", *({f"f{i:03}": 0} for i in range(200))]
    summary = top_level_fields(items, sample=3)
    assert summary.names == ("a", "b", "c") and not summary.more and summary.objects == 2
    wide = top_level_fields(items)
    assert len(wide.names) == FIELDS_SHOWN and wide.more
    assert wide.text().endswith(", ...")
    long = top_level_fields([{"n" * 500: 1}])
    assert long.names == ("n" * 57 + "...",)
