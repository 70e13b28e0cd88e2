"""Hold Python's cyclic garbage collector while building or keying large, acyclic data.

Parsing a 300 MB list of leads creates millions of dicts; each allocation burst triggers a
collection that rescans every object created so far, so with the collector on, orjson
takes 5.9 s for 100,000 leads and 1.5 s without it (measured here; benchmarks/RESULTS.md).
JSON holds no reference cycles, so nothing is lost by waiting. The pause is counted, so
that overlapping polls in several threads re-enable the collector only when the last one
ends.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator

_lock = threading.Lock()
_holders = 0
_was_enabled = True


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    global _holders, _was_enabled
    with _lock:
        if _holders == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _holders += 1
    try:
        yield
    finally:
        with _lock:
            _holders -= 1
            if _holders == 0 and _was_enabled:
                gc.enable()
