"""Tests for trigger_engine.polling.body: a body decoded within its size and ratio, and
parsed only within the parse budget."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterator

import pytest

from trigger_engine.core.exact_json import scan_json
from trigger_engine.polling.body import (
    MIB,
    PARSE_BUDGET,
    STEP,
    BodyLimits,
    BodyRefused,
    check_parse_cost,
    read_body,
)
from trigger_engine.sandbox import Simulator

TEXT = b'[{"id": "L1", "name": "Ada"}, {"id": "L2", "name": "Grace"}]' * 50
LIMITS = BodyLimits(max_size=512 * MIB)


def deflate_raw(data: bytes) -> bytes:
    packer = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return packer.compress(data) + packer.flush()


def in_chunks(data: bytes, size: int = 64 * 1024) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


@pytest.mark.parametrize(
    ("raw", "coding"),
    [
        pytest.param(TEXT, "", id="identity-implicit"),
        pytest.param(TEXT, "identity", id="identity"),
        pytest.param(gzip.compress(TEXT), "gzip", id="gzip"),
        pytest.param(gzip.compress(TEXT), "x-gzip", id="x-gzip"),
        pytest.param(gzip.compress(TEXT), " GZIP ", id="gzip-any-case"),
        pytest.param(zlib.compress(TEXT), "deflate", id="deflate-zlib"),
        pytest.param(deflate_raw(TEXT), "deflate", id="deflate-raw"),
        pytest.param(gzip.compress(zlib.compress(TEXT)), "deflate, gzip", id="two-codings"),
        pytest.param(gzip.compress(TEXT) + b"trailing", "gzip", id="bytes-after-the-end"),
    ],
)
def test_bodies_decode_as_httpx_did(raw: bytes, coding: str) -> None:
    assert read_body(in_chunks(raw, 7), coding, LIMITS) == TEXT


def test_a_large_body_decodes_in_bounded_steps() -> None:
    text = b"[" + b'{"id": 1},' * (3 * STEP // 10) + b"{}]"
    assert read_body(in_chunks(gzip.compress(text)), "gzip", LIMITS) == text


@pytest.mark.parametrize(
    ("raw", "coding", "reason"),
    [
        pytest.param(b"\x1f\x8bnot gzip", "gzip", "could not be decoded (gzip)", id="corrupt"),
        pytest.param(b"\x00\x01garbage", "deflate", "could not be decoded (deflate)", id="bad"),
        pytest.param(TEXT, "br", "encoded with 'br', which was not asked for", id="br"),
        pytest.param(TEXT, "gzip, zstd", "encoded with 'zstd'", id="zstd-in-a-list"),
    ],
)
def test_what_cannot_be_decoded_is_refused(raw: bytes, coding: str, reason: str) -> None:
    with pytest.raises(BodyRefused, match=reason.replace("(", r"\(").replace(")", r"\)")):
        read_body(in_chunks(raw), coding, LIMITS)


def bomb(decoded: int) -> bytes:
    """gzip of ``[{},{},...]`` decoding to about ``decoded`` bytes (ratio ~1000)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    unit = b"{}," * (MIB // 3)
    out = [packer.compress(b"[")]
    out += [packer.compress(unit) for _ in range(decoded // len(unit))]
    out.append(packer.compress(b"{}]") + packer.flush())
    return b"".join(out)


def test_a_decompression_bomb_is_refused_while_it_streams() -> None:
    raw = bomb(400 * MIB)  # ~390 KiB on the wire, within the 512 MiB size cap
    seen = 0

    def network() -> Iterator[bytes]:
        nonlocal seen
        for chunk in in_chunks(raw):
            seen += len(chunk)
            yield chunk

    with pytest.raises(BodyRefused) as info:
        read_body(network(), "gzip", LIMITS)
    assert seen == 64 * 1024  # the first network read was enough to tell
    assert "decompresses to more than 100 times its 65,536 bytes" in str(info.value)


@pytest.mark.parametrize(
    ("decoded", "refused"),
    [
        pytest.param(7 * MIB, False, id="high-ratio-under-the-floor"),
        pytest.param(9 * MIB, True, id="high-ratio-over-the-floor"),
    ],
)
def test_the_ratio_applies_above_the_floor(decoded: int, refused: bool) -> None:
    raw = bomb(decoded)
    if refused:
        with pytest.raises(BodyRefused, match="more than 100 times"):
            read_body(in_chunks(raw), "gzip", LIMITS)
    else:
        assert len(read_body(in_chunks(raw), "gzip", LIMITS)) > 6 * MIB


def test_an_ordinary_compression_ratio_passes_above_the_floor() -> None:
    text = b"".join(b'{"id": "L%07d", "status": "new"},' % i for i in range(400_000))  # 13 MB
    raw = gzip.compress(text)
    assert len(text) / len(raw) < 100
    assert read_body(in_chunks(raw), "gzip", LIMITS) == text


def test_the_size_cap_applies_to_the_decoded_size() -> None:
    with pytest.raises(BodyRefused, match="larger than 1 MiB"):
        read_body(in_chunks(gzip.compress(b" " * (2 * MIB))), "gzip", BodyLimits(max_size=MIB))


# ----------------------------------------------------------------- the parse budget


@pytest.mark.parametrize(
    ("body", "refused"),
    [
        pytest.param(b"[" + b"{}," * 50 + b"{}]", True, id="over"),
        pytest.param(b"[" + b"{}," * 49 + b"{}]", False, id="at-the-budget"),
        pytest.param(b'["' + b"x" * 500 + b'"]', False, id="long-but-cheap"),
    ],
)
def test_a_body_over_the_budget_is_refused(body: bytes, refused: bool) -> None:
    structural = scan_json(body).structural
    if refused:
        with pytest.raises(BodyRefused, match="more than 100 JSON brackets and separators"):
            check_parse_cost(structural, budget=100)
    else:
        check_parse_cost(structural, budget=100)


def test_the_budget_passes_real_leads_up_to_the_size_cap() -> None:
    """The budget is set from the simulator's leads: their density at the 512 MiB cap."""
    sim = Simulator(api_key="k", seed=7, initial=0)
    sim.add_leads(2_000)
    body = sim.list_body("leads")
    structural = scan_json(body).structural
    density = structural / len(body)
    assert 0.08 < density < 0.1  # as measured on 100,000 leads (0.089)
    assert structural * 100_000 / 2_000 < PARSE_BUDGET / 1.7  # 100,000 leads, with margin
    assert density * 512 * MIB < PARSE_BUDGET  # a body of leads at the size cap
    check_parse_cost(structural)
