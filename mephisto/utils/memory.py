"""Memory helpers shared by the bulk paths (launching a run, loading results)."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause Python's cyclic GC while making many long-lived objects (a 100,000-unit
    launch, 100,000 loaded results): otherwise it rescans them again and again, a fifth
    to a third of the time. A GC the process had already disabled stays disabled."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
