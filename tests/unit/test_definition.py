"""Tests for trigger_engine.core.definition: a trigger's dedupe definition fingerprinted."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from trigger_engine.core.definition import (
    DefinitionPrint,
    changed_parts,
    definition_print,
    redefined,
)

BASE: dict[str, Any] = {
    "path": "/leads",
    "key": ("id",),
    "items_path": None,
    "params": {"status": "open", "team": "a"},
    "update_fields": None,
}


def fp(**changes: Any) -> DefinitionPrint:
    return definition_print(**{**BASE, **changes})


def test_the_fingerprint_is_stable_and_written_in_full() -> None:
    # fixed values: a change of the scheme would re-seed every trigger of every user
    canonical = json.dumps({**BASE, "key": ["id"]}, sort_keys=True, separators=(",", ":")).encode()
    assert fp().digest == hashlib.sha256(canonical).hexdigest()[:16] == "06d339960a2b2fad"
    assert fp().encode() == (
        "06d339960a2b2fad;path=3f869a1d,key=fc949a4d,items_path=74234e98,"
        "params=9e76e37e,update_fields=74234e98"
    )
    assert len(fp(params={str(i): "x" * 50 for i in range(50)}).encode()) <= 200  # the column
    assert DefinitionPrint.decode(fp().encode()) == fp()


@pytest.mark.parametrize(
    ("change", "parts"),
    [
        pytest.param({"path": "/leads2"}, ("path",), id="path"),
        pytest.param({"key": ("uuid",)}, ("key",), id="key"),
        pytest.param({"key": ("id", "email")}, ("key",), id="composite-key"),
        pytest.param({"items_path": "actions"}, ("items_path",), id="items-path"),
        pytest.param({"params": {"status": "open"}}, ("params",), id="params-removed"),
        pytest.param({"params": {"status": "closed", "team": "a"}}, ("params",), id="param-value"),
        pytest.param({"update_fields": ("status",)}, ("update_fields",), id="update-fields"),
        pytest.param({"path": "/x", "key": ("k",)}, ("path", "key"), id="two-parts"),
    ],
)
def test_each_part_changes_the_fingerprint_and_is_named(
    change: dict[str, Any], parts: tuple[str, ...]
) -> None:
    old, new = fp(), fp(**change)
    assert old.digest != new.digest
    assert redefined(old.encode(), new)
    assert changed_parts(old.encode(), new) == parts


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        pytest.param({"params": {"a": "1", "b": "2"}}, {"params": {"b": "2", "a": "1"}}, True),
        pytest.param({"key": ("a", "b")}, {"key": ("b", "a")}, False, id="key-order-counts"),
        pytest.param(
            {"update_fields": ("s", "t")}, {"update_fields": ("t", "s")}, False, id="versions"
        ),
        pytest.param({"update_fields": None}, {"update_fields": ()}, False, id="none-vs-empty"),
        pytest.param({"items_path": None}, {"items_path": ""}, False, id="null-vs-empty"),
    ],
)
def test_what_counts_as_the_same_definition(
    a: dict[str, Any], b: dict[str, Any], same: bool
) -> None:
    assert (fp(**a).digest == fp(**b).digest) is same


def test_no_stored_fingerprint_is_no_change() -> None:
    """An upgraded database (or a trigger never polled) adopts its definition silently."""
    assert not redefined(None, fp(key=("uuid",)))
    assert not redefined(fp().encode(), fp())


def test_a_stored_bare_digest_still_compares_but_cannot_name_parts() -> None:
    assert redefined("0123456789abcdef", fp())
    assert not redefined(fp().digest, fp())
    assert changed_parts("0123456789abcdef", fp()) == ()
