"""What one response body may cost: the bytes we buffer, the decompression ratio, and the
parse.

A gzip body of ``[{},{},...]`` 400 KiB on the wire decodes to 400 MB (gzip's ratio tops out
near 1032:1) and parses to gigabytes of Python objects, so a size cap alone is not enough.

Decoding is ours, not httpx's: httpx inflates each network read in one call (up to ~66 MB
for a 64 KiB read of gzip; its optional zstd decoder has no bound at all). Here each
inflate step yields at most :data:`STEP` bytes and the limits are checked after each one,
while the body streams in: a body whose decoded size passes both ``BodyLimits.floor`` and
``BodyLimits.ratio`` times the bytes received so far is refused there. Real JSON
compresses 10 to 15 times (14x for the simulator's leads at gzip -9); ``[{},...]`` 1000
times. We ask for ``gzip`` and ``deflate`` only (:data:`ACCEPT_ENCODING`); any other
coding is refused rather than guessed at.

The parse is estimated before it starts: ``core.exact_json.scan_json`` counts the bytes
that make a JSON parser allocate (``{``, ``[``, ``,`` and ``:``: a container, or one more
member of one), and :func:`check_parse_cost` refuses, unparsed, a body whose count passes
:data:`PARSE_BUDGET`: an uncompressed ``[{},{},...]`` (or one that compresses no better
than real JSON) gets past the ratio, and 120 MB of it would parse to some 3 GB.

Refusals are :class:`BodyRefused` with the reason as a sentence; the source adds which
account, trigger and request it was about.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

MIB = 1024 * 1024
STEP = 1 * MIB  # at most this many decoded bytes per inflate call
ACCEPT_ENCODING = "gzip, deflate"  # the content codings we ask for, and the only we decode

# The parse budget, in structural bytes ({ [ , :), measured here on the embedded simulator
# (seed 7, as in benchmarks/): 100,000 leads are a 317 MB body holding 28.2 million (0.089
# a byte), which parses to ~2.3 GB (7.2x the body, benchmarks/RESULTS.md): ~80 bytes of
# Python objects each. 50 million is 1.77x that: what a body of such leads would hold at
# the 512 MiB size cap (47.8 million) plus a 4.6% margin, so the size cap, not this budget,
# is what limits a real response. ``[{},{},...]`` holds 0.67 a byte (two per empty object,
# ~36 bytes of objects each): it passes the budget from 75 MB of body on.
PARSE_BUDGET = 50_000_000


class BodyRefused(Exception):
    """A body is refused; ``str(exc)`` says why, as the end of a sentence."""


@dataclass(frozen=True)
class BodyLimits:
    """The limits of one body: its decoded size, and its decoded size to bytes received
    (refused when past both ``floor`` and ``ratio`` times the bytes received)."""

    max_size: int
    floor: int = 8 * MIB
    ratio: int = 100


def read_body(raw: Iterable[bytes], content_encoding: str, limits: BodyLimits) -> bytes:
    """The decoded body of ``raw`` (the bytes as received), or :class:`BodyRefused`."""
    received = 0

    def counted() -> Iterator[bytes]:
        nonlocal received
        for chunk in raw:
            received += len(chunk)
            yield chunk

    pieces: Iterator[bytes] = counted()
    for coding in reversed(_codings(content_encoding)):  # the last applied comes off first
        pieces = _Inflater(coding).inflate(pieces)
    chunks: list[bytes] = []
    size = 0
    for piece in pieces:
        size += len(piece)
        if size > limits.max_size:
            raise BodyRefused(f"the response is larger than {_size(limits.max_size)}; refusing it")
        if size > limits.floor and size > limits.ratio * received:
            raise BodyRefused(
                f"the response decompresses to more than {limits.ratio} times its "
                f"{received:,} bytes ({size:,} bytes so far); refusing it"
            )
        chunks.append(piece)
    return b"".join(chunks)


def check_parse_cost(structural: int, budget: int | None = None) -> None:
    """Refuse (:class:`BodyRefused`) a body whose ``structural`` bytes
    (:func:`~trigger_engine.core.exact_json.scan_json`) pass ``budget`` (default
    :data:`PARSE_BUDGET`)."""
    budget = PARSE_BUDGET if budget is None else budget
    if structural > budget:
        raise BodyRefused(
            f"the response holds more than {budget:,} JSON brackets and separators "
            "({ [ , :), more than a poll may parse; refusing it"
        )


def _codings(header: str) -> list[str]:
    codings = [c.strip().lower() for c in header.split(",")]
    codings = [c for c in codings if c and c != "identity"]
    for coding in codings:
        if coding not in ("gzip", "x-gzip", "deflate"):
            raise BodyRefused(
                f"the response is encoded with '{coding}', which was not asked for "
                f"(accept-encoding: {ACCEPT_ENCODING})"
            )
    return codings


class _Inflater:
    """One content coding, inflated :data:`STEP` bytes at a time."""

    def __init__(self, coding: str) -> None:
        self.coding = coding
        # deflate is zlib-wrapped by the RFC, raw in some servers: decided on the first bytes
        self._raw_fallback = coding == "deflate"
        gzip_header = 16
        wbits = zlib.MAX_WBITS if coding == "deflate" else zlib.MAX_WBITS | gzip_header
        self._zlib = zlib.decompressobj(wbits)

    def inflate(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        for chunk in chunks:
            yield from self._steps(chunk)
        tail = self._zlib.flush()
        if tail:
            yield tail

    def _steps(self, data: bytes) -> Iterator[bytes]:
        while True:
            try:
                piece = self._zlib.decompress(data, STEP)
            except zlib.error:
                if not self._raw_fallback:
                    raise BodyRefused(
                        f"the response body could not be decoded ({self.coding})"
                    ) from None
                self._zlib = zlib.decompressobj(-zlib.MAX_WBITS)
                self._raw_fallback = False
                continue
            self._raw_fallback = False
            if piece:
                yield piece
            data = self._zlib.unconsumed_tail
            if not data and len(piece) < STEP:
                return


def _size(n: int) -> str:
    return f"{n // MIB} MiB" if n >= MIB and n % MIB == 0 else f"{n:,} bytes"
