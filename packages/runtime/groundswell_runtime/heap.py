"""Keep the garbage collector off the hot path's back, in every service process.

Measured under load (py-spy --native): in signing, collections took ~10% of its CPU
(docs/performance.md), in the mailer and the counter 2-3%. Each full collection walks
every object the process holds, most of them the framework's, the libraries' and the
caches' built at start-up, while the work waits. Once start-up is done those are frozen
(`gc.freeze`: never scanned again, still freed by reference counting), and young
collections run a tenth as often: nearly every object a request or an event makes is
freed by reference counting anyway; cycles are collected later.
"""

from __future__ import annotations

import gc

# Allocations of container objects between young-generation collections (CPython's
# default is 700).
GC_YOUNG_THRESHOLD = 7_000


def settle_heap() -> None:
    """Call once start-up is done (Service.start, the counter's worker)."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)
