"""What one response body may cost: the bytes we buffer and the decompression ratio.

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
