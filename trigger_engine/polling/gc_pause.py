"""Hold Python's cyclic garbage collector while building or keying large, acyclic data.

Parsing a 300 MB list of leads creates millions of dicts; each allocation burst triggers a
collection that rescans every object created so far, so with the collector on, orjson
takes 5.9 s for 100,000 leads and 1.5 s without it (measured here; benchmarks/RESULTS.md).
JSON holds no reference cycles, so nothing is lost by waiting. The pause is counted, so
that overlapping polls in several threads re-enable the collector only when the last one
ends.

The collector is process-wide, so a hold also delays the collection of the rest of the
process's cyclic garbage (aiohttp, asyncio, exceptions). The poller only holds it for a
poll that may be large (see ``poller.may_be_large``), and while holds overlap without a
break, a release runs a collection of the young generations at most every
:data:`COLLECT_EVERY` seconds: each object is scanned once there (then it is old), so a
large parse pays for one pass over what it built, not the repeated rescans the hold
avoids, and the rest of the process's young garbage still goes.
"""

from __future__ import annotations

import contextlib
import gc
import threading
import time
from collections.abc import Iterator

COLLECT_EVERY = 1.0  # seconds: young collections while holds overlap without a break

_lock = threading.Lock()
_holders = 0
_was_enabled = True
_collected_at = 0.0  # time.monotonic() of the hold's start or its last collection


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Hold the cyclic GC for the duration of the block (counted across threads)."""
    global _holders, _was_enabled, _collected_at
    with _lock:
        if _holders == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
            _collected_at = time.monotonic()
        _holders += 1
    try:
        yield
    finally:
        collect = False
        with _lock:
            _holders -= 1
            if _holders == 0:
                if _was_enabled:
                    gc.enable()  # collects at the next allocation if a collection is due
            elif _was_enabled and time.monotonic() - _collected_at >= COLLECT_EVERY:
                _collected_at = time.monotonic()
                collect = True
        if collect:
            gc.collect(1)
