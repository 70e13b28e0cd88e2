"""Start-up without the garbage collector's rescans: import the engine with the cyclic
collector paused, then freeze what the imports made.

Importing SQLAlchemy, pydantic and the engine makes tens of thousands of objects the
collector tracks, nearly all of them live as long as the process; the collector would walk
them again and again while they are made (over a hundred collections, a fifth of a command
like ``status``), and once more at the interpreter's exit. ``gc.freeze()`` moves them to
the permanent generation, which no collection walks, and the collector resumes for the
command's own work.

Only a process that has not imported ``module`` yet pauses (a command line's, not an
embedding process that imported the engine already, such as a test run): what it freezes
is its own start-up, plus the few hundred cyclic objects the imports leave behind, which
stay with it.
"""

from __future__ import annotations

import contextlib
import gc
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def importing_without_gc(module: str) -> Iterator[None]:
    """Pause the collector while the block imports ``module``, then freeze and resume."""
    if module in sys.modules or not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()
