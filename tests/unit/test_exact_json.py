"""Tests for trigger_engine.core.exact_json: JSON parsed fast with every value exact, and
the scan that tells, without parsing, what a body costs and whether orjson would round."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest

from trigger_engine.core import exact_json
from trigger_engine.core.exact_json import JsonScan, parse_json, scan_json
from trigger_engine.sandbox import Simulator

BIG = 2**64 + 1  # 18446744073709551617: orjson's float for it is also 2**64 + 2's


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(b'[{"id": 1, "n": "Ada"}]', [{"id": 1, "n": "Ada"}], id="plain"),
        pytest.param(b'["\\ud83d"]', ["\ud83d"], id="lone-high-surrogate"),
        pytest.param(b'["\\udE00 tail"]', ["\ude00 tail"], id="lone-low-surrogate"),
        pytest.param(b'["Ada \\ud83d\\ude00"]', ["Ada \U0001f600"], id="surrogate-pair"),
        pytest.param(
            b'[{"name": "Shaban \\ud83d", "id": 7}]',
            [{"name": "Shaban \ud83d", "id": 7}],
            id="emoji-cut-in-a-name",
        ),
        pytest.param(
            b"[18446744073709551617, 18446744073709551618]",
            [BIG, BIG + 1],
            id="two-ids-beyond-64-bits",
        ),
        pytest.param(b'{"id":-9223372036854775809}', {"id": -(2**63) - 1}, id="below-int64"),
        pytest.param(b"[18446744073709551615]", [2**64 - 1], id="uint64-max-fast-path"),
        pytest.param(b"[-9223372036854775808]", [-(2**63)], id="int64-min-fast-path"),
        pytest.param(b"123456789012345678901234567890", 123456789012345678901234567890, id="top"),
        pytest.param(
            b'{"a": [1.5, "12345678901234567890"], "b": 123456789012345678901}',
            {"a": [1.5, "12345678901234567890"], "b": 123456789012345678901},
            id="exact-path-keeps-everything-else",
        ),
        pytest.param(b'["\\ud83d", 1e2, 0.1]', ["\ud83d", 100.0, 0.1], id="floats-unchanged"),
    ],
)
def test_every_value_is_kept_exact(body: bytes, expected: Any) -> None:
    parsed = parse_json(body)
    assert parsed == expected
    assert type(parsed) is type(expected)
    assert repr(parsed) == repr(expected)  # ints stay ints: 2**64 + 1 is not 1.8e19


def test_two_ids_beyond_64_bits_are_two_leads() -> None:
    body = b'[{"id": 18446744073709551617}, {"id": 18446744073709551618}]'
    assert len({lead["id"] for lead in orjson.loads(body)}) == 1  # what orjson alone does
    ids = [lead["id"] for lead in parse_json(body)]
    assert ids == [18446744073709551617, 18446744073709551618]
    assert all(type(i) is int for i in ids)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"[1,", id="truncated"),
        pytest.param(b'["\\ud83d",', id="truncated-with-a-surrogate"),
        pytest.param(b"[NaN]", id="nan"),
        pytest.param(b'["\\ud83d", Infinity]', id="infinity-with-a-surrogate"),
        pytest.param(b'["\\ud83d", 1e400]', id="float-overflow-with-a-surrogate"),
        pytest.param(b"[12345678901234567890, 1e400]", id="float-overflow-on-the-exact-path"),
        pytest.param(b'["\xed\xa0\xbd"]', id="surrogate-encoded-as-utf-8-bytes"),
        pytest.param(b'["\\ud83d", "\xff"]', id="invalid-utf-8"),
        pytest.param('["\\ud83d"]'.encode("utf-16"), id="utf-16"),
        pytest.param(b"<html>", id="html"),
    ],
)
def test_what_is_not_json_is_refused_as_orjson_refused_it(body: bytes) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 (orjson's, json's or UnicodeDecodeError)
        parse_json(body)


@pytest.mark.parametrize(
    ("body", "wide"),
    [
        pytest.param(b"[12345678901234567890]", True, id="20-digits"),
        pytest.param(b'{"a":12345678901234567890}', True, id="after-a-colon"),
        pytest.param(b'{"a": 12345678901234567890}', True, id="after-a-space"),
        pytest.param(b"[1,\n\t12345678901234567890]", True, id="after-a-newline-and-tab"),
        pytest.param(b"[-1234567890123456789]", True, id="minus-and-19-digits"),
        pytest.param(b"12345678901234567890", True, id="the-whole-document"),
        pytest.param(b"-1234567890123456789", True, id="the-whole-document-negative"),
        pytest.param(b"[1234567890123456789]", False, id="19-digits"),
        pytest.param(b'["12345678901234567890"]', False, id="in-a-string"),
        pytest.param(b'["2-f45154735440107715449fba"]', False, id="in-a-string-after-a-minus"),
        pytest.param(b'["a 12345678901234567890"]', True, id="in-a-string-after-a-space"),
        pytest.param(b"[1.12345678901234567890]", False, id="a-fraction"),
        pytest.param(b"[1e12345678901234567890]", False, id="an-exponent"),
        pytest.param(b'[{"id": 42, "at": "2025-06-16 00:04:18+00:00"}]', False, id="plain"),
    ],
)
def test_the_scan_finds_integers_beyond_64_bits(body: bytes, wide: bool) -> None:
    assert scan_json(body).wide_integer is wide


@pytest.mark.parametrize(
    ("body", "count"),
    [
        pytest.param(b"", 0, id="empty"),
        pytest.param(b"[]", 1, id="empty-list"),
        pytest.param(b"[{},{},{}]", 6, id="empty-objects"),
        pytest.param(b'[{"a": 1, "b": [2, 3]}]', 7, id="nested"),
        pytest.param(b'["{[,:"]', 5, id="inside-strings-too"),  # an estimate, on the safe side
        pytest.param(b"{}," * 3_000_000, 6_000_000, id="several-chunks"),
    ],
)
def test_the_scan_counts_structural_bytes(body: bytes, count: int) -> None:
    assert scan_json(body).structural == count


NUMBERS = [
    pytest.param(b"12345678901234567890", True, id="20-digits"),
    pytest.param(b"-1234567890123456789", True, id="minus-19"),
    pytest.param(b"1234567890123456789", False, id="19-digits"),
    pytest.param(b'"12345678901234567890"', False, id="string"),
    pytest.param(b'"x-1234567890123456789"', False, id="string-minus"),
]


@pytest.mark.parametrize(("value", "wide"), NUMBERS)
def test_the_scan_is_right_across_chunk_boundaries(
    monkeypatch: pytest.MonkeyPatch, value: bytes, wide: bool
) -> None:
    """Every position of the value around the edges of 64-byte chunks."""
    monkeypatch.setattr(exact_json, "_CHUNK", 64)
    for pad in range(0, 200):
        body = b'["' + b"x" * pad + b'", ' + value + b', "' + b"1" * 18 + b'"]'
        scan = scan_json(body)
        if wide:
            assert scan.wide_integer, (pad, body)
        else:
            # A 19-digit positive run reaching a chunk's end is taken as wide (costs speed
            # only); a string never is.
            assert not scan.wide_integer or value == b"1234567890123456789", (pad, body)
        assert scan.structural == body.count(b",") + body.count(b"[")
        assert parse_json(body, scan) == json.loads(body)


def test_many_long_digit_runs_in_strings_take_the_exact_path() -> None:
    body = b"[" + b'"x12345678901234567890",' * 20_000 + b"1]"
    assert scan_json(body).wide_integer  # past 10,000 candidates: assumed, not checked
    assert parse_json(body) == orjson.loads(body)


def test_a_scan_given_by_the_caller_is_used() -> None:
    body = b"[18446744073709551617]"
    assert parse_json(body, JsonScan(structural=1, wide_integer=False)) == [1.8446744073709552e19]
    assert parse_json(body, JsonScan(structural=1, wide_integer=True)) == [BIG]


def test_real_leads_take_the_fast_path_and_parse_as_orjson_does() -> None:
    sim = Simulator(api_key="k", seed=7, initial=0)
    sim.add_leads(2_000)
    body = sim.list_body("leads")
    assert not scan_json(body).wide_integer
    assert parse_json(body) == orjson.loads(body)
