"""The collector's young-generation threshold, raised to suit a busy aiohttp server.

CPython collects generation 0 once the tracked objects allocated, less those freed, pass
700. A collection resets that count to zero and frees cannot take it below zero, so it
ratchets: a server with hundreds of requests in flight allocates in bursts well past 700
that it frees a moment later, and the collector runs every few dozen requests, traversing
live request state and finding no garbage (no request here leaves a reference cycle).
At 100 ms upstream latency over 256 connections that was hundreds of collections in a 6 s
run, 14 to 16 % of the CPU, plus the cache misses after each; at 10,000, one to four (README,
Benchmarks). Cycles, where they do occur, are still collected, 10,000 allocations later.
"""

from __future__ import annotations

import gc

GEN0_THRESHOLD = 10_000


def tune_gc() -> None:
    """Raise generation 0's threshold; the older generations keep theirs."""
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GEN0_THRESHOLD, gen1, gen2)
