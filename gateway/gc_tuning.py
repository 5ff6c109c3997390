"""The collector's young-generation threshold, raised to suit a busy aiohttp server.

With hundreds of requests in flight, allocation bursts pass CPython's 700 again and again
and the collector traverses live request state finding no garbage (no request here leaves
a reference cycle); cycles that do occur are still collected, 10,000 allocations later.
The measurements: docs/BENCHMARKS.md, "The garbage collector".
"""

from __future__ import annotations

import gc

GEN0_THRESHOLD = 10_000


def tune_gc() -> None:
    """Raise generation 0's threshold; the older generations keep theirs."""
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GEN0_THRESHOLD, gen1, gen2)
